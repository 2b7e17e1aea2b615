"""Real SMTP software on loopback, for the interoperability tests.

Theory of operation: each peer (Postfix, Exim, smtp-sink, aiosmtpd) is
started once per test session by a fixture in ``tests/conftest.py``, on
127.0.0.1 and a free high port, from the scripts in ``tests/peers/``; it is
stopped at the end of the session by the pid we started, and by nothing else.
Nothing is ever relayed off the machine: the peers' configurations route
``test.example`` to a Maildir, throw ``discard.example`` away and refuse
every other domain, and their DNS lookups are off.

A test that needs a peer calls :func:`require`.  When the peer is missing the
test **fails** under CI (``CI`` set in the environment: ``.ci/run`` installs
every peer with ``tests/peers/install-debian.sh``) and skips elsewhere, with
a reason that names the package to install.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "peers"
PEERS_DIR = Path(os.environ.get("SMTPPROTO_PEERS_DIR", "/opt/smtpproto-peers"))
IN_CI = bool(os.environ.get("CI"))
INSTALL_HINT = "install the peers with: sudo tests/peers/install-debian.sh"

#: The login every peer's configuration accepts (Postfix wants the realm).
USER = "test"
PASSWORD = "secret"

#: Headers a receiving MTA adds; stripped before comparing what was sent with
#: what was stored.
TRACE_HEADERS = frozenset(
    {"return-path", "received", "delivered-to", "envelope-to", "x-original-to"}
)


def exim_binary() -> str | None:
    """The Exim binary: installed, or unpacked by ``install-debian.sh``."""
    unpacked = PEERS_DIR / "exim" / "usr" / "sbin" / "exim4"
    if unpacked.exists():
        return str(unpacked)
    return shutil.which("exim4")


def require(
    what: str,
    *,
    executables: Iterable[str] = (),
    modules: Iterable[str] = (),
    exim: bool = False,
    root: bool = False,
) -> None:
    """Fail (under CI) or skip (elsewhere) unless everything *what* needs is here."""
    missing = [name for name in executables if shutil.which(name) is None]
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module} (pip install -e '.[test]')")
    if exim and exim_binary() is None:
        missing.append("exim4 (Debian exim4-daemon-light)")
    if root and os.geteuid() != 0:
        missing.append("root (the MTAs start as root and drop privileges)")
    if not missing:
        return
    message = f"{what} needs {', '.join(missing)}; {INSTALL_HINT}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound to port 0, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_greeting(
    host: str, port: int, process: subprocess.Popen[bytes] | None, timeout: float = 30.0
) -> None:
    """Wait until *host*:*port* answers with a 220 greeting."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"peer exited with {process.returncode}: {output[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.settimeout(5)
                greeting = sock.recv(512)
                if greeting.startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
                last_error = repr(greeting)
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"no greeting from {host}:{port} in {timeout} s ({last_error})")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a peer we started: SIGTERM to its process group, then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    if process.stdout is not None:
        process.stdout.close()


def body_of(raw: bytes) -> bytes:
    """A stored message without the trace headers the receiving MTA added,
    with CRLF line endings (Maildir files use LF)."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    kept: list[bytes] = []
    in_trace = False
    in_headers = True
    for line in lines:
        if in_headers:
            if line == b"":
                in_headers = False
            elif line[:1] in (b" ", b"\t"):
                if in_trace:
                    continue
            else:
                name = line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
                in_trace = name in TRACE_HEADERS
                if in_trace:
                    continue
        kept.append(line)
    return b"\r\n".join(kept)


def normalised(message: bytes) -> bytes:
    """*message* as a server stores it: CRLF endings and a final CRLF."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def header(raw: bytes, name: str) -> str | None:
    """One header of a stored message (for Message-ID matching)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    value = parsed.get(name)
    return None if value is None else str(value)


@dataclass
class Peer:
    """A running peer: where it listens and where it stores mail."""

    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    base: Path
    maildir: Path | None = None
    ca: Path | None = None
    user: str = USER
    password: str = PASSWORD
    stop_command: Sequence[str] = field(default_factory=tuple)

    def stored(self) -> list[bytes]:
        """Every message in the Maildir (new and cur), oldest first."""
        if self.maildir is None:
            raise RuntimeError(f"{self.name} stores no mail")
        files: list[Path] = []
        for sub in ("new", "cur"):
            folder = self.maildir / sub
            if folder.is_dir():
                files.extend(p for p in folder.iterdir() if p.is_file())
        files.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return [p.read_bytes() for p in files]

    def find(self, message_id: str, timeout: float = 30.0) -> bytes:
        """Wait for the stored message whose Message-ID is *message_id*."""
        deadline = time.monotonic() + timeout
        while True:
            for raw in self.stored():
                if header(raw, "Message-ID") == message_id:
                    return raw
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} stored no message {message_id} in {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the peer (its own stop command first, then by pid)."""
        if self.stop_command and self.process.poll() is None:
            try:  # a hung stop command must not keep us from the pid
                subprocess.run(self.stop_command, capture_output=True, timeout=30, check=False)
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        stop_process(self.process)


def _run_script(*args: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        ["sh", *map(str, args)], capture_output=True, timeout=120, env=env, check=False
    )
    if result.returncode:
        raise RuntimeError(
            f"{args[0]} failed: {result.stdout.decode(errors='replace')}"
            f"{result.stderr.decode(errors='replace')}"
        )


def _popen(command: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_postfix(
    base: Path, cert: Path, key: Path, ca: Path, *, main_cf: dict[str, str] | None = None
) -> Peer:
    """A private Postfix under *base* (``tests/peers/postfix-setup.sh``).

    *main_cf* adds or overrides ``main.cf`` settings (for the relay instance).
    """
    port = free_port()
    _run_script(SCRIPTS / "postfix-setup.sh", base, cert, key, str(port))
    conf = base / "conf"
    if main_cf:
        with open(conf / "main.cf", "a", encoding="ascii") as extra:
            for name, value in main_cf.items():
                extra.write(f"{name} = {value}\n")
    process = _popen(["postfix", "-c", str(conf), "start-fg"])
    peer = Peer(
        "postfix", "127.0.0.1", port, process, base,
        maildir=base / "mail" / "maildir", ca=ca, user=f"{USER}@test.example",
        stop_command=("postfix", "-c", str(conf), "stop"),
    )
    try:
        wait_for_greeting(peer.host, port, process)
    except BaseException:
        peer.stop()
        raise
    return peer


def start_exim(
    base: Path, cert: Path, key: Path, ca: Path, *, template: Path | None = None
) -> Peer:
    """A private Exim under *base* (``tests/peers/exim-setup.sh``).

    *template* replaces ``exim.conf.in`` as the configuration (``@B@`` and
    ``@EXIM@`` are filled in the same way), e.g. for the relay instance.
    """
    exim = exim_binary()
    assert exim is not None, "require(exim=True) first"
    port = free_port()
    _run_script(SCRIPTS / "exim-setup.sh", base, cert, key, env={**os.environ, "EXIM": exim})
    if template is not None:
        text = template.read_text(encoding="ascii").replace("@B@", str(base))
        conf = base / "exim.conf"
        conf.write_text(text.replace("@EXIM@", exim), encoding="ascii")
        conf.chmod(0o644)  # Exim refuses a configuration others may write
    process = _popen([exim, "-C", str(base / "exim.conf"), "-bdf", "-q1m", "-oX", str(port)])
    peer = Peer("exim", "127.0.0.1", port, process, base, maildir=base / "mail" / "Maildir", ca=ca)
    try:
        wait_for_greeting(peer.host, port, process)
    except BaseException:
        peer.stop()
        raise
    return peer


def start_smtp_sink(base: Path, *, backlog: int = 1024, dump: bool = True) -> Peer:
    """Postfix's ``smtp-sink``; with *dump*, each transaction goes to a file in *base*."""
    port = free_port()
    base.mkdir(parents=True, exist_ok=True)
    command = ["smtp-sink", "-u", "nobody"]
    if dump:
        os.chmod(base, 0o777)  # smtp-sink writes as nobody
        command += ["-d", f"{base}/msg."]
    command += [f"127.0.0.1:{port}", str(backlog)]
    process = _popen(command)
    peer = Peer("smtp-sink", "127.0.0.1", port, process, base)
    try:
        wait_for_greeting(peer.host, port, process)
    except BaseException:
        peer.stop()
        raise
    return peer


def smtp_sink_dumps(peer: Peer) -> list[bytes]:
    """The transactions ``smtp-sink -d`` wrote (each one: envelope lines,
    then the message), oldest first."""
    files = sorted(
        (p for p in peer.base.rglob("*") if p.is_file()), key=lambda p: (p.stat().st_mtime, p.name)
    )
    return [p.read_bytes() for p in files]


def python() -> str:
    """The interpreter running the tests (for peers written in Python)."""
    return sys.executable
