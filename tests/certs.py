"""A test certificate authority and contexts for TLS tests (trustme).

The CA and the server certificate (for ``localhost``, ``127.0.0.1`` and
``::1``) are made once per test session, in memory; nothing is written
outside a pytest temporary directory.
"""

from __future__ import annotations

import ssl
from functools import cache
from pathlib import Path

import trustme


@cache
def authority() -> trustme.CA:
    """The session's test CA."""
    return trustme.CA()


@cache
def server_certificate() -> trustme.LeafCert:
    """A certificate for the loopback names, signed by :func:`authority`."""
    return authority().issue_cert("localhost", "127.0.0.1", "::1")


def server_context() -> ssl.SSLContext:
    """A server context holding the test certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_certificate().configure_cert(context)
    return context


def client_context() -> ssl.SSLContext:
    """A client context that trusts only the test CA (hostname verified)."""
    context = ssl.create_default_context()
    authority().configure_trust(context)
    return context


def write_files(directory: Path) -> tuple[Path, Path, Path]:
    """Write the CA, certificate chain and key as PEM files (for the CLI
    and external peers); returns ``(ca, cert, key)``."""
    ca = directory / "ca.pem"
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    authority().cert_pem.write_to_path(str(ca))
    leaf = server_certificate()
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return ca, cert, key
