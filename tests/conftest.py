"""Session fixtures for the real peers (see ``tests/peerlib.py``).

Each peer starts the first time a test asks for it and stops when the test
session ends.  The peers' files live in one directory made with
``tempfile.mkdtemp`` (not pytest's private temporary directory, whose 0700
parents the MTAs' unprivileged users could not enter), removed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import peerlib
from certs import write_files


@pytest.fixture(scope="session")
def peer_root() -> Iterator[Path]:
    """A world-searchable directory for the peers' configuration and mail."""
    root = Path(tempfile.mkdtemp(prefix="smtpproto-peers-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def peer_certs(peer_root: Path) -> tuple[Path, Path, Path]:
    """``(ca, cert, key)`` PEM files of the test CA, for the peers."""
    directory = peer_root / "certs"
    directory.mkdir()
    directory.chmod(0o755)
    ca, cert, key = write_files(directory)
    for path in (ca, cert, key):
        path.chmod(0o644)
    return ca, cert, key


@pytest.fixture(scope="session")
def postfix(peer_root: Path, peer_certs: tuple[Path, Path, Path]) -> Iterator[peerlib.Peer]:
    """A private Postfix: STARTTLS, AUTH PLAIN/LOGIN/CRAM-MD5, Maildir."""
    peerlib.require("Postfix", executables=["postfix", "saslpasswd2"], root=True)
    ca, cert, key = peer_certs
    peer = peerlib.start_postfix(peer_root / "postfix", cert, key, ca)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def exim(peer_root: Path, peer_certs: tuple[Path, Path, Path]) -> Iterator[peerlib.Peer]:
    """A private Exim: STARTTLS, AUTH PLAIN/LOGIN/CRAM-MD5, CHUNKING, Maildir."""
    peerlib.require("Exim", exim=True, root=True)
    ca, cert, key = peer_certs
    peer = peerlib.start_exim(peer_root / "exim", cert, key, ca)
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def smtp_sink(peer_root: Path) -> Iterator[peerlib.Peer]:
    """Postfix's smtp-sink, dumping every transaction to a file."""
    peerlib.require("smtp-sink", executables=["smtp-sink"], root=True)
    peer = peerlib.start_smtp_sink(peer_root / "sink")
    yield peer
    peer.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the interoperability rows this run recorded (see tests/interop.py)."""
    import interop

    interop.write_matrix()
