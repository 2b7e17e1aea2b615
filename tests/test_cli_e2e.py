"""``python -m smtpproto serve`` and ``send`` end to end, as processes.

Every server is a real ``serve`` process on a loopback port (``--port 0``,
the port read from its ``listening on`` line) or a Unix socket; clients are
``send`` processes and the standard library's smtplib.  Each server is
stopped with SIGTERM by its pid and must exit with status 0.  No output may
hold a Python traceback.
"""

from __future__ import annotations

import email.utils
import mailbox
import os
import re
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from certs import write_files
from smtpproto import Rcpt, Reply
from smtpproto.cli.received import local_hostname
from smtpproto.flows import Envelope, Handler, Session
from smtpproto.sync import ServerThread

HOSTNAME = "mx.test"
LIMIT = 30.0  # seconds any one process may take
MESSAGE = b"Subject: hello\nFrom: a@example.org\n\nFrom the start.\n>From quoted.\n.\nend\n"
# What the server stores: CRLF line ends (send converts LF), unstuffed.
STORED = MESSAGE.replace(b"\n", b"\r\n")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "smtpproto", *args]


class Serve:
    """A ``serve`` process: started, its address read, stopped by SIGTERM."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(command("serve", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.output = b""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + LIMIT
        while b"\n" not in self.output:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.proc.kill()
                raise AssertionError(f"serve {args} did not say it was listening")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                _, err = self.proc.communicate(timeout=LIMIT)
                raise AssertionError(f"serve {args} ended: {err.decode()}")
            self.output += chunk
        first, _, self.output = self.output.partition(b"\n")
        match = re.fullmatch(rb"listening on (.+)", first)
        assert match, first
        self.where = match.group(1).decode()
        host, _, port = self.where.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port) if port.isdigit() else 0
        self.stdout = b""
        self.stderr = b""
        self.signalled = False

    def terminate(self, number: int = signal.SIGTERM) -> None:
        """SIGTERM (or *number*), once."""
        if not self.signalled:
            self.signalled = True
            os.kill(self.proc.pid, number)

    def stop(self) -> None:
        """SIGTERM; the process must exit 0 without a traceback."""
        if self.proc.returncode is None:
            self.terminate()
            out, err = self.proc.communicate(timeout=LIMIT)
            self.stdout, self.stderr = self.output + out, err
        assert b"Traceback" not in self.stderr, self.stderr.decode()
        assert self.proc.returncode == 0, (self.proc.returncode, self.stderr.decode())


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start ``serve`` processes; each is stopped (and checked) at the end."""
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        server = Serve(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def send(*args: str, message: bytes = MESSAGE) -> subprocess.CompletedProcess[str]:
    """Run ``send``; its standard error never holds a traceback."""
    done = subprocess.run(
        command("send", *args), input=message.decode(), capture_output=True, text=True, timeout=LIMIT
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def to(server: Serve, *args: str) -> list[str]:
    """``send`` options that reach *server*."""
    return ["--host", server.host, "--port", str(server.port), *args]


def received_pattern(protocol: str, recipient: str | None = None, peer: bytes = rb" \(\[127\.0\.0\.1\]\)") -> bytes:
    """The trace fields as the server must write them (CRLF)."""
    for_clause = b"" if recipient is None else b" for <" + re.escape(recipient.encode()) + b">"
    return (
        rb"Return-Path: <(?P<sender>[^>]*)>\r\n"
        rb"Received: from (?P<helo>\S+)" + peer + rb"\r\n"
        rb"\tby " + re.escape(HOSTNAME.encode()) + rb" with " + protocol.encode() + for_clause + rb";\r\n"
        rb"\t(?P<date>[^\r\n]+)\r\n"
    )


def check_stored(data: bytes, protocol: str, sender: str, recipient: str | None, content: bytes = STORED,
                 peer: bytes = rb" \(\[127\.0\.0\.1\]\)") -> None:
    match = re.match(received_pattern(protocol, recipient, peer), data)
    assert match, data[:300]
    assert match.group("sender").decode() == sender
    date = email.utils.parsedate_to_datetime(match.group("date").decode())
    assert abs(datetime.now(timezone.utc) - date) < timedelta(minutes=5)
    assert data[match.end():] == content


def maildir_files(path: Path) -> list[bytes]:
    new = path / "new"
    return [(new / name).read_bytes() for name in sorted(os.listdir(new))]


# -- sinks and backends ------------------------------------------------------------


def test_maildir_on_asyncio_one_file_per_message(serve: Any, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    server = serve("--port", "0", "--maildir", str(maildir), "--hostname", HOSTNAME)
    done = send(*to(server, "--from", "a@example.org", "--to", "b@example.org", "--to", "c@example.org"))
    assert (done.returncode, done.stderr) == (0, "")
    with smtplib.SMTP(server.host, server.port, timeout=LIMIT) as client:
        assert client.ehlo()[1].startswith(HOSTNAME.encode())
        client.sendmail("", ["d@example.org"], STORED)
    first, second = sorted(maildir_files(maildir), key=lambda data: b"<d@" in data)
    check_stored(first, "ESMTP", "a@example.org", None)  # two recipients, one file, no "for"
    check_stored(second, "ESMTP", "", "d@example.org")
    assert len(mailbox.Maildir(str(maildir))) == 2


def test_mbox_on_trio_is_mboxrd(serve: Any, tmp_path: Path) -> None:
    mbox = tmp_path / "mbox"
    server = serve("--port", "0", "--mbox", str(mbox), "--hostname", HOSTNAME, "--backend", "trio")
    for sender in ("a@example.org", ""):
        done = send(*to(server, "--from", sender, "--to", "b@example.org", "--no-tls"))
        assert done.returncode == 0, done.stderr
    server.stop()
    first, *entries = re.split(rb"(?m)^(?=From )", mbox.read_bytes())
    assert first == b"" and len(entries) == 2
    # mboxrd: LF line ends, and every "^>*From " line gets one more ">".
    quoted = b"Subject: hello\nFrom: a@example.org\n\n>From the start.\n>>From quoted.\n.\nend\n"
    for entry, sender in zip(entries, ("a@example.org", "")):
        separator, _, body = entry.partition(b"\n")
        name = (sender or "MAILER-DAEMON").encode()
        assert separator.startswith(b"From " + name + b" ")
        time.strptime(separator[len(name) + 6 :].decode(), "%a %b %d %H:%M:%S %Y")
        assert body.endswith(b"\n\n") and b"\r" not in body
        lf = body[:-1].replace(b"\n", b"\r\n")
        check_stored(lf, "ESMTP", sender, "b@example.org", quoted.replace(b"\n", b"\r\n"))
    box = mailbox.mbox(str(mbox))
    try:
        assert len(box) == 2
    finally:
        box.close()


def test_print_on_sync_with_the_local_host_name(serve: Any) -> None:
    server = serve("--port", "0", "--print", "--backend", "sync")
    with smtplib.SMTP(server.host, server.port, timeout=LIMIT) as client:
        code, greeting = client.ehlo("client.example")
        assert code == 250
        client.sendmail("a@example.org", ["b@example.org"], STORED)
    server.stop()
    assert greeting.split(b"\n")[0] == local_hostname().encode()
    assert server.stdout.startswith(b"From a@example.org ")
    assert f"\tby {local_hostname()} with ESMTP for <b@example.org>;".encode() in server.stdout
    assert b"Received: from client.example ([127.0.0.1])\n" in server.stdout
    assert b"\n>From the start.\n>>From quoted.\n.\nend\n\n" in server.stdout


@pytest.mark.parametrize(
    ("backend", "number"),
    [("asyncio", signal.SIGTERM), ("uvloop", signal.SIGTERM), ("trio", signal.SIGINT), ("sync", signal.SIGTERM)],
)
def test_sigterm_gives_open_sessions_421(serve: Any, backend: str, number: int) -> None:
    server = serve("--port", "0", "--discard", "--backend", backend, "--hostname", HOSTNAME)
    with socket.create_connection((server.host, server.port), timeout=LIMIT) as sock, sock.makefile("rb") as stream:
        assert stream.readline().startswith(b"220 " + HOSTNAME.encode())
        sock.sendall(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n")
        while not stream.readline().startswith(b"250 "):
            pass
        assert stream.readline() == b"250 2.1.0 Sender OK\r\n"
        server.terminate(number)
        assert stream.readline().startswith(b"421 4.3.2 ")
        assert stream.readline() == b""
    server.stop()


def test_discard_accepts_and_keeps_nothing(serve: Any, tmp_path: Path) -> None:
    server = serve("--port", "0", "--discard")
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 2000
    done = send(*to(server, "--from", "a@example.org", "--to", "b@example.org"), message=big)
    assert (done.returncode, done.stderr) == (0, "")
    server.stop()
    assert server.stdout == b""


def test_workers_share_the_port(serve: Any, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    server = serve("--port", "0", "--maildir", str(maildir), "--workers", "2", "--hostname", HOSTNAME)
    for number in range(16):
        with smtplib.SMTP(server.host, server.port, timeout=LIMIT) as client:
            client.sendmail("a@example.org", ["b@example.org"], b"Subject: %d\r\n\r\nhi\r\n" % number)
    server.stop()
    names = os.listdir(maildir / "new")
    assert len(names) == 16
    # mailbox.Maildir names each file ...P<pid>Q...: both workers stored mail.
    pids = {re.search(r"P(\d+)Q", name).group(1) for name in names}  # type: ignore[union-attr]
    assert len(pids) == 2 and str(server.proc.pid) not in pids


# -- TLS and AUTH ------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca, cert, key = write_files(tmp_path)
    users = tmp_path / "users"
    users.write_text("# user:password\nalice:s3cret\nbob:with:colon\n")
    return {"ca": str(ca), "cert": str(cert), "key": str(key), "users": str(users)}


def test_starttls_auth_require_auth_and_require_tls(serve: Any, pki: dict[str, str], tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    server = serve(
        "--port", "0", "--maildir", str(maildir), "--hostname", HOSTNAME,
        "--tls-cert", pki["cert"], "--tls-key", pki["key"],
        "--auth-file", pki["users"], "--require-auth", "--require-tls",
    )
    mail = ["--from", "a@example.org", "--to", "b@example.org"]
    # STARTTLS verified with the test CA, then AUTH (the strongest: SCRAM-SHA-256).
    done = send(*to(server, *mail, "--cafile", pki["ca"], "--user", "alice", "--password", "s3cret", "--verbose"))
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"=== Trying {server.host}:{server.port}...", f"=== Connected to {server.host}:{server.port}."]
    assert lines[2] == f"<-  220 {HOSTNAME} ESMTP smtpproto"
    assert " -> STARTTLS" in lines and "=== TLS started." in lines
    assert "<-  250-AUTH" not in "\n".join(lines)  # not offered in cleartext
    assert any(line.startswith("<~  250-AUTH SCRAM-SHA-256") for line in lines)
    assert " ~> AUTH SCRAM-SHA-256 ****" in lines and "<~  235 2.7.0 Authentication successful" in lines
    assert "s3cret" not in done.stdout
    assert " ~> >From quoted." in lines and " ~> .." in lines  # the content, dot-stuffed
    assert lines[-1] == "=== Connection closed."
    # --insecure: no verification; the password with a colon in it.
    done = send(*to(server, *mail, "--insecure", "--user", "bob", "--password", "with:colon"))
    assert (done.returncode, done.stderr) == (0, "")
    # smtplib, an independent client: STARTTLS and AUTH PLAIN/LOGIN.
    context = ssl.create_default_context(cafile=pki["ca"])
    with smtplib.SMTP(server.host, server.port, timeout=LIMIT) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        code, _ = client.mail("a@example.org")
        assert code == 530  # --require-tls: STARTTLS first
        client.starttls(context=context)
        client.ehlo()
        assert client.mail("a@example.org")[0] == 530  # --require-auth
        client.login("alice", "s3cret")
        client.sendmail("a@example.org", ["c@example.org"], STORED)
    files = maildir_files(maildir)
    assert len(files) == 3
    for data in files:
        check_stored(data, "ESMTPSA", "a@example.org", re.search(rb"for <([^>]+)>", data).group(1).decode())  # type: ignore[union-attr]
    # Failures: a certificate nobody vouches for, a wrong password, no AUTH.
    done = send(*to(server, *mail))
    assert done.returncode == 1
    assert done.stderr.startswith("STARTTLS: TLS handshake failed") and "CERTIFICATE_VERIFY_FAILED" in done.stderr
    done = send(*to(server, *mail, "--cafile", pki["ca"], "--user", "alice", "--password", "wrong"))
    assert (done.returncode, done.stderr.splitlines()) == (1, ["AUTH: authentication failed: 535 5.7.8 Authentication credentials invalid"])
    done = send(*to(server, *mail, "--cafile", pki["ca"]))
    assert (done.returncode, done.stderr) == (1, "MAIL: the sender was refused: 530 5.7.0 Authentication required\n")
    done = send(*to(server, *mail, "--no-tls"))
    assert done.returncode == 1 and done.stderr.startswith("MAIL: the sender was refused: 530 5.7.0 ")


def test_implicit_tls(serve: Any, pki: dict[str, str], tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    server = serve(
        "--port", "0", "--maildir", str(maildir), "--hostname", HOSTNAME,
        "--tls-cert", pki["cert"], "--tls-key", pki["key"], "--implicit-tls",
    )
    done = send(*to(server, "--from", "a@example.org", "--to", "b@example.org", "--tls", "--cafile", pki["ca"], "-v"))
    assert (done.returncode, done.stderr) == (0, "")
    assert f"<~  220 {HOSTNAME} ESMTP smtpproto" in done.stdout.splitlines()
    assert "STARTTLS" not in done.stdout
    (data,) = maildir_files(maildir)
    check_stored(data, "ESMTPS", "a@example.org", "b@example.org")
    done = send(*to(server, "--from", "a@example.org", "--to", "b@example.org", "--tls"))
    assert done.returncode == 1 and done.stderr.startswith("connect: TLS handshake failed")


def test_lmtp_over_a_unix_socket(serve: Any, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    path = str(tmp_path / "lmtp.sock")
    server = serve("--unix", path, "--lmtp", "--maildir", str(maildir), "--hostname", HOSTNAME)
    assert server.where == path
    done = send("--unix", path, "--lmtp", "--from", "a@example.org", "--to", "b@example.org",
                "--to", "c@example.org", "--verbose")
    assert (done.returncode, done.stderr) == (0, "")
    assert " -> LHLO " in done.stdout
    assert done.stdout.count("<-  250 2.0.0 Message accepted for delivery") == 2  # one per recipient
    (data,) = maildir_files(maildir)
    check_stored(data, "LMTP", "a@example.org", None, peer=b"")
    server.stop()
    assert not os.path.exists(path)


# -- send: exit statuses and standard error ---------------------------------------


class Picky(Handler):
    """Refuses some recipients: 550 for unknown@, 450 for busy@."""

    def __init__(self) -> None:
        self.delivered: list[list[str]] = []

    def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
        if rcpt.forward_path.startswith("unknown@"):
            return Reply(code=550, enhanced="5.1.1", text=("No such user here",))
        if rcpt.forward_path.startswith("busy@"):
            return Reply(code=450, enhanced="4.2.1", text=("Mailbox busy, try later",))
        return None

    def message(self, session: Session, envelope: Envelope) -> Reply | None:
        self.delivered.append(envelope.recipient_addresses)
        return None


def test_refused_recipients_and_exit_statuses() -> None:
    handler = Picky()
    with ServerThread(handler) as server:
        host, port = server.address
        base = ["--host", host, "--port", str(port), "--from", "a@example.org"]
        done = send(*base, "--to", "ok@example.org", "--to", "unknown@example.org", "--to", "busy@example.org")
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            "unknown@example.org: 550 5.1.1 No such user here",
            "busy@example.org: 450 4.2.1 Mailbox busy, try later",
        ]
        done = send(*base, "--to", "ok@example.org", "--to", "busy@example.org")
        assert (done.returncode, done.stderr) == (75, "busy@example.org: 450 4.2.1 Mailbox busy, try later\n")
        done = send(*base, "--to", "busy@example.org")  # nobody accepted: temporary
        assert (done.returncode, done.stderr) == (75, "busy@example.org: 450 4.2.1 Mailbox busy, try later\n")
        done = send(*base, "--to", "unknown@example.org")
        assert (done.returncode, done.stderr) == (1, "unknown@example.org: 550 5.1.1 No such user here\n")
        done = send(*base, "--to", "ok@example.org", "--starttls")  # no STARTTLS offered
        assert done.returncode == 1 and done.stderr.startswith("STARTTLS: ")
    # The accepted recipients got the message.
    assert handler.delivered == [["ok@example.org"], ["ok@example.org"]]


def test_message_too_big_is_552(serve: Any) -> None:
    server = serve("--port", "0", "--discard", "--max-message-size", "65536")
    done = send(*to(server, "--from", "a@example.org", "--to", "b@example.org"),
                message=b"Subject: big\n\n" + (b"y" * 70 + b"\n") * 1000)
    assert done.returncode == 1
    assert re.fullmatch(r"MAIL: the sender was refused: 552 5\.3\.4 .+\n", done.stderr), done.stderr


def test_network_and_protocol_failures() -> None:
    # Nothing listening: temporary.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = send("--host", "127.0.0.1", "--port", str(port), "--from", "a@example.org", "--to", "b@example.org")
    assert done.returncode == 75 and done.stderr.startswith("connect: could not connect to 127.0.0.1:")
    # A server that speaks garbage: permanent; one that hangs up or says
    # nothing: temporary.
    cases = ((b"hello there\r\n", 1, "greeting"), (b"", 75, "greeting"), (None, 75, "greeting"))
    for answer, status, step in cases:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            def reply(answer: bytes | None = answer) -> None:
                conn, _ = listener.accept()
                with conn:
                    if answer is None:
                        conn.recv(1)  # until the client gives up
                    else:
                        conn.sendall(answer)
            thread = threading.Thread(target=reply)
            thread.start()
            done = send("--host", "127.0.0.1", "--port", str(listener.getsockname()[1]),
                        "--from", "a@example.org", "--to", "b@example.org", "--timeout", "1")
            thread.join(LIMIT)
        assert done.returncode == status, done.stderr
        assert done.stderr.startswith(f"{step}: ") and len(done.stderr.splitlines()) == 1, done.stderr


def test_demo_runs_as_the_readme_says(tmp_path: Path) -> None:
    # Only the standard library: no trio, trustme, hypothesis or pytest needed.
    script = (
        "import sys; from smtpproto.__main__ import main; status = main(['demo']); "
        "extra = {'trio', 'trustme', 'hypothesis', 'pytest'} & set(sys.modules); "
        "assert not extra, extra; sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=LIMIT,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert " -> DATA" in lines and "<-  354 End data with <CR><LF>.<CR><LF>" in lines
    assert " -> .." in lines  # the lone dot, stuffed on the wire
    assert "<-  250 2.0.0 Message accepted for delivery" in lines and "<-  221 2.0.0 Bye" in lines
    stored = next(line for line in lines if line.startswith("=== The server stored the message in "))
    path = Path(stored.rpartition(" ")[2])
    assert path.parent.name == "new" and path.is_relative_to(tmp_path)
    data = path.read_bytes()
    assert data.startswith(b"Return-Path: <alice@example.org>\r\nReceived: from ")
    assert b"\r\n.\r\nAlice\r\n" in data
