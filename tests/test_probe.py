"""The hostile-peer probe (smtpproto.testing.probe) and ``python -m smtpproto probe``.

Three kinds of server are probed, all on loopback:

* ours, on every adapter (``running()`` from test_adapter_matrix), with
  STARTTLS and AUTH so that those attacks apply: every verdict must be
  safe or not applicable (but for the one core bug named below);
* tiny scripted servers, each correct but for one deliberate flaw (data
  that ends on LF.LF, input kept across STARTTLS, silence after a long
  line): the probe must flag exactly the attacks that flaw opens, and
  nothing on the same server without the flaw;
* weird servers (silent, closing, sending garbage or endless lines): the
  probe must come back with a result for every attack, without a probe
  error.

Every wait of the probe has a timeout, so none of these can hang.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import certs
from smtpproto import LocalProtocolError, ServerConfig
from smtpproto.__main__ import main
from smtpproto.testing.probe import ATTACKS, AttackResult, ProbeReport, Verdict, run_probe
from test_adapter_matrix import KINDS, Recorder, running

# Attacks the probe finds our servers unsafe against because of a known
# core bug: none.  (parser-bare-lf-in-command was one until command lines
# ended at CRLF only, RFC 5321 §2.3.8.)
KNOWN_CORE_BUGS: set[str] = set()
CLIENT_ONLY = {"outbound-smuggling", "caller-command-injection", "limits-slow-sender"}
SMUGGLED_SUBJECT = b"Subject: smtpproto probe, smuggled"


def by_class(*classes: int) -> list[str]:
    return [a.name for a in ATTACKS if a.attack_class in classes]


def verdicts(report: ProbeReport) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in report.results}


def names_with(report: ProbeReport, verdict: Verdict) -> set[str]:
    return {r.name for r in report.results if r.verdict is verdict}


# -- the attack list ---------------------------------------------------------------


def test_probe_attack_list_covers_every_class_with_unique_documented_names() -> None:
    names = [a.name for a in ATTACKS]
    assert len(names) == len(set(names))
    assert {a.attack_class for a in ATTACKS} == set(range(1, 10))
    assert [a.attack_class for a in ATTACKS] == sorted(a.attack_class for a in ATTACKS)
    for attack in ATTACKS:
        assert attack.description.strip() and attack.sent, attack.name
    smuggling = " ".join(a.description for a in ATTACKS if a.attack_class == 1)
    for fake_end in ("LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CR.LF", "NUL"):
        assert fake_end in smuggling


def test_run_probe_refuses_bad_arguments_before_connecting() -> None:
    with pytest.raises(LocalProtocolError):
        run_probe("127.0.0.1", 1, rcpt="a@example.org>\r\nRCPT TO:<b@example.org")
    with pytest.raises(ValueError, match="unknown attack"):
        run_probe("127.0.0.1", 1, attacks=["no-such-attack"])
    with pytest.raises(ValueError, match="username and password"):
        run_probe("127.0.0.1", 1, username="bob")
    with pytest.raises(ValueError, match="timeout"):
        run_probe("127.0.0.1", 1, timeout=0)


# -- our servers -------------------------------------------------------------------


def probe_ours(kind: str, config: ServerConfig) -> tuple[ProbeReport, Recorder]:
    handler = Recorder()
    with running(kind, handler, config=config, ssl_context=certs.server_context()) as (host, port):
        report = run_probe(
            host, port, tls_context=certs.client_context(), username="bob", password="secret",
            mail_from="alice@example.org", rcpt="carol@example.org", timeout=10,
        )
    return report, handler


def check_ours(report: ProbeReport, handler: Recorder, not_applicable: set[str]) -> None:
    assert report.error is None
    assert len(report.results) == len(ATTACKS)
    assert {r.name for r in report.unsafe} == KNOWN_CORE_BUGS, report.format_table()
    assert names_with(report, Verdict.NOT_APPLICABLE) == not_applicable
    assert names_with(report, Verdict.INCONCLUSIVE) == set()
    # What the verdicts claim, seen from the handler: no smuggled message,
    # no message cut off by a disconnect, nothing over the size limit.
    contents = [envelope.content or b"" for envelope in handler.received]
    for content in contents:
        assert content.startswith(b"Subject: smtpproto probe\r\n")
        assert not content.startswith(SMUGGLED_SUBJECT)
        assert len(content) <= 65536
    # The only accepted payloads are those whose fake end has no bare CR
    # or LF: the smuggled commands arrived as data.
    accepted = {r.name for r in report.results if r.name.startswith("smuggle-") and r.server_did[0] == "250"}
    assert accepted == {"smuggle-crlf-nul-dot-crlf", "smuggle-crlf-dot-nul-crlf"}
    assert all(b"\r\nMAIL FROM:<alice@example.org>\r\n" in content for content in contents)
    assert len(contents) == len(accepted)


@pytest.mark.parametrize("kind", KINDS)
def test_probe_of_our_servers_finds_them_safe(kind: str) -> None:
    config = ServerConfig(
        starttls=True, auth_mechanisms=("SCRAM-SHA-256", "PLAIN", "LOGIN"),
        max_message_size=65536, max_recipients=100,
    )
    report, handler = probe_ours(kind, config)
    check_ours(report, handler, CLIENT_ONLY)
    results = {r.name: r for r in report.results}
    # The attacks really ran where they apply: AUTH after STARTTLS, the
    # recipient bound that LIMITS announced, the whole flood answered.
    assert "TLS" in results["auth-twice"].setup and "235" in results["auth-twice"].setup
    assert results["limits-too-many-recipients"].server_did[-2:] == ("452", "221")
    assert results["limits-pipeline-flood"].server_did[0] == "250x5000"


def test_probe_of_a_submission_server_logs_in_where_it_must() -> None:
    config = ServerConfig(
        starttls=True, require_tls=True, require_auth=True, auth_mechanisms=("PLAIN", "LOGIN"),
        max_message_size=65536, max_recipients=100,
    )
    report, handler = probe_ours("sync", config)
    check_ours(report, handler, CLIENT_ONLY | {"auth-in-transaction"})
    # Every transaction needed STARTTLS and a login first, so the
    # disconnects were cut under TLS (a half-close of the TCP stream).
    for result in report.results:
        if result.name.startswith(("smuggle-", "disconnect-")):
            assert "TLS" in result.setup and "235" in result.setup, result


# -- scripted servers with one flaw ------------------------------------------------


class Lines:
    """A socket read as lines split on LF, one CR stripped (the classic
    lenient reader), or up to a byte sequence."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def line(self) -> bytes | None:
        while b"\n" not in self.buffer:
            if not self.more():
                return None
        end = self.buffer.index(b"\n")
        line = bytes(self.buffer[:end]).removesuffix(b"\r")
        del self.buffer[: end + 1]
        return line

    def until(self, end: bytes) -> bytes | None:
        while end not in self.buffer:
            if not self.more():
                return None
        cut = self.buffer.index(end)
        data = bytes(self.buffer[:cut])
        del self.buffer[: cut + len(end)]
        return data

    def drain(self) -> None:
        while self.more():
            pass


def fake_smtp(flaw: str | None, context: ssl.SSLContext | None) -> Callable[[socket.socket], None]:
    """A minimal SMTP server, correct but for *flaw*:

    ``lf-data-end``: data lines are split on LF and end at a line ".";
    ``starttls-keeps-input``: input read before STARTTLS is kept and run
    under TLS; ``silent-after-long-line``: a line over 1000 octets gets no
    reply, ever."""

    def session(sock: socket.socket) -> None:
        conn = Lines(sock)
        try:
            converse(conn)
        finally:
            conn.sock.close()  # the TLS wrapper, when there is one

    def converse(conn: Lines) -> None:
        sock = conn.sock
        tls = False
        sock.sendall(b"220 fake.example ESMTP\r\n")
        while (line := conn.line()) is not None:
            if len(line) > 1000:
                if flaw == "silent-after-long-line":
                    return conn.drain()
                conn.sock.sendall(b"500 Line too long\r\n")
                continue
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                offer = [b"PIPELINING", b"8BITMIME"] + ([b"STARTTLS"] if context and not tls else [])
                conn.sock.sendall(b"250-fake.example\r\n" + b"".join(
                    (b"250 " if i == len(offer) - 1 else b"250-") + o + b"\r\n" for i, o in enumerate(offer)))
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                conn.sock.sendall(b"250 OK\r\n")
            elif verb == b"DATA":
                conn.sock.sendall(b"354 go ahead\r\n")
                if flaw == "lf-data-end":
                    while (data_line := conn.line()) not in (b".", None):
                        pass
                    data = b"" if data_line == b"." else None
                else:
                    data = conn.until(b"\r\n.\r\n")
                if data is None:
                    return None
                if flaw == "silent-after-long-line" and max(map(len, data.split(b"\r\n"))) > 1000:
                    return conn.drain()
                conn.sock.sendall(b"250 queued\r\n")
            elif verb == b"STARTTLS" and context is not None and not tls:
                conn.sock.sendall(b"220 go ahead\r\n")
                if flaw != "starttls-keeps-input":
                    conn.buffer.clear()
                try:
                    conn.sock = context.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    return None
                tls = True
            elif verb == b"STARTTLS":
                conn.sock.sendall(b"503 TLS already active\r\n")
            elif verb == b"QUIT":
                conn.sock.sendall(b"221 bye\r\n")
                return None
            else:
                conn.sock.sendall(b"500 unrecognised\r\n")
        return None

    return session


@contextmanager
def serving(session: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """Run *session* for every connection to a loopback port; yield the address."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve_one(sock: socket.socket) -> None:
        with sock:
            sock.settimeout(10)
            try:
                session(sock)
            except OSError:
                pass  # the probe hung up, as it may

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=serve_one, args=(sock,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for thread in threads:
            thread.join(15)
        assert not any(t.is_alive() for t in [acceptor, *threads])


FLAWS = [
    ("lf-data-end", by_class(1), {"smuggle-lf-dot-lf", "smuggle-lf-dot-crlf", "smuggle-crlf-dot-lf"}),
    ("starttls-keeps-input", by_class(3),
     {"starttls-pipelined-rset", "starttls-pipelined-mail", "starttls-pipelined-ehlo"}),
    ("silent-after-long-line", ["limits-long-command-line", "limits-long-data-line", "limits-pipeline-flood"],
     {"limits-long-command-line", "limits-long-data-line"}),
]


@pytest.mark.parametrize("flawed", [True, False], ids=["flawed", "fixed"])
@pytest.mark.parametrize(("flaw", "attacks", "opened"), FLAWS, ids=[f[0] for f in FLAWS])
def test_probe_flags_exactly_what_a_flaw_opens(
    flaw: str, attacks: list[str], opened: set[str], flawed: bool
) -> None:
    with serving(fake_smtp(flaw if flawed else None, certs.server_context())) as (host, port):
        # The silent flaw makes two attacks wait out their timeout; the
        # others are answered at once, so a generous timeout costs nothing.
        timeout = 1.5 if flaw == "silent-after-long-line" else 5.0
        report = run_probe(host, port, tls_context=certs.client_context(), timeout=timeout, attacks=attacks)
    assert [r.name for r in report.results] == attacks
    assert {r.name for r in report.unsafe} == (opened if flawed else set()), report.format_table()
    assert names_with(report, Verdict.SAFE) == set(attacks) - (opened if flawed else set())


def test_smuggling_verdict_shows_the_smuggled_transaction_was_answered() -> None:
    with serving(fake_smtp("lf-data-end", None)) as (host, port):
        report = run_probe(host, port, timeout=2.0, attacks=["smuggle-lf-dot-lf"])
    (result,) = report.results
    # The first message's 250, then the smuggled MAIL, RCPT, DATA and
    # message, then the 221 to QUIT.
    assert result.server_did == ("250", "250", "250", "354", "250", "221")
    assert "answered the smuggled commands" in result.reason


# -- weird servers -------------------------------------------------------------------


def endless(first: bytes, chunk: bytes) -> Callable[[socket.socket], None]:
    def session(sock: socket.socket) -> None:
        sock.sendall(first)
        for _ in range(10_000):  # bounded: 10,000 chunks, or until the probe leaves
            sock.sendall(chunk)

    return session


def garbage(sock: socket.socket) -> None:
    sock.sendall(b"\x16\x03\x01\x00\xffHTTP/1.1 400 Bad Request\r\n\r\n\x00\xff")


def silent(sock: socket.socket) -> None:
    Lines(sock).drain()


def garbage_then_silent(sock: socket.socket) -> None:
    garbage(sock)
    silent(sock)


def greet_then(after: Callable[[socket.socket], None]) -> Callable[[socket.socket], None]:
    """Greeting and EHLO as expected; then *after*, whatever comes."""

    def session(sock: socket.socket) -> None:
        conn = Lines(sock)
        sock.sendall(b"220 weird.example ESMTP\r\n")
        line = conn.line()
        if line is None:
            return
        sock.sendall(b"250-weird.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-AUTH PLAIN\r\n"
                     b"250-CHUNKING\r\n250 SIZE 100000\r\n")
        if conn.line() is not None:
            after(sock)

    return session


UNREACHABLE = {
    "silent": silent,
    "closes": lambda sock: None,
    "garbage": garbage,
    "endless-line": endless(b"220 ", b"x" * 65536),
    "endless-multiline": endless(b"", b"220-hello\r\n" * 1000),
}


@pytest.mark.parametrize("behaviour", list(UNREACHABLE))
def test_probe_of_a_server_that_never_greets_properly(behaviour: str) -> None:
    with serving(UNREACHABLE[behaviour]) as (host, port):
        report = run_probe(host, port, timeout=0.5)
    assert report.error is not None
    assert len(report.results) == len(ATTACKS)
    assert names_with(report, Verdict.NOT_APPLICABLE) == CLIENT_ONLY
    assert names_with(report, Verdict.INCONCLUSIVE) == {a.name for a in ATTACKS} - CLIENT_ONLY


WEIRD_AFTER_EHLO: dict[str, tuple[Callable[[socket.socket], None], list[str] | None]] = {
    "garbage": (garbage_then_silent, None),
    "closes": (lambda sock: None, None),
    "endless-line": (endless(b"250 ", b"y" * 65536), None),
    "endless-replies": (endless(b"", b"250 ok\r\n" * 1000), None),
    # Every wait runs into the timeout here: one attack of each family.
    "silent": (silent, ["smuggle-lf-dot-lf", "parser-8bit-verb", "auth-cancel", "limits-pipeline-flood"]),
}


@pytest.mark.parametrize("behaviour", list(WEIRD_AFTER_EHLO))
def test_probe_survives_a_server_gone_weird_after_ehlo(behaviour: str) -> None:
    after, attacks = WEIRD_AFTER_EHLO[behaviour]
    with serving(greet_then(after)) as (host, port):
        report = run_probe(host, port, timeout=1.0, attacks=attacks, username="bob", password="x")
    assert report.error is None
    assert [r.name for r in report.results] == (attacks or [a.name for a in ATTACKS])
    assert not [r for r in report.results if r.reason.startswith("probe error")], report.format_table()
    assert ProbeReport.from_dict(json.loads(report.to_json())) == report


# -- the report and the command line ------------------------------------------------


def test_report_round_trips_through_json_and_reads_as_a_table() -> None:
    with serving(fake_smtp("lf-data-end", None)) as (host, port):
        report = run_probe(host, port, timeout=2.0, attacks=["smuggle-lf-dot-lf", "smuggle-cr-dot-cr"])
    assert ProbeReport.from_dict(json.loads(report.to_json())) == report
    data = report.to_dict()
    assert data["summary"] == {"safe": 1, "unsafe": 1, "not applicable": 0, "inconclusive": 0}
    assert AttackResult.from_dict(data["results"][0]) == report.results[0]
    table = report.format_table()
    assert "smuggle-lf-dot-lf" in table and "unsafe" in table
    assert "2 attacks: 1 safe, 1 unsafe, 0 not applicable, 0 inconclusive" in table


def cli(*args: str) -> list[str]:
    return ["probe", *args]


def test_cli_exit_status_follows_the_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    attacks = ["--attack", "smuggle-lf-dot-lf", "--attack", "smuggle-cr-dot-cr", "--timeout", "2"]
    with serving(fake_smtp("lf-data-end", None)) as (host, port):
        assert main(cli("--host", host, "--port", str(port), *attacks)) == 1
    table = capsys.readouterr().out
    assert "unsafe" in table and "smuggle-cr-dot-cr" in table
    with serving(fake_smtp(None, None)) as (host, port):
        assert main(cli("--host", host, "--port", str(port), "--json", *attacks)) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert [r["verdict"] for r in data["results"]] == ["safe", "safe"]
    assert ProbeReport.from_dict(data).to_dict() == data


def test_cli_exit_status_when_nothing_can_be_probed(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: connection refused.
    assert main(cli("--host", "127.0.0.1", "--port", str(port), "--timeout", "2")) == 75
    assert "could not probe" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "bob"], "--user needs --password"),
        (["--password", "x"], "--password needs --user"),
        (["--attack", "no-such-attack"], "unknown attack"),
        (["--rcpt", "not an address"], "rcpt"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--starttls-ca", "missing-ca-file.pem"], "--starttls-ca"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTPPROTO_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(cli("--host", "127.0.0.1", "--port", "1", *args))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_lists_the_attacks_through_python_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smtpproto", "probe", "--list"], capture_output=True, text=True,
        timeout=60, check=True,
    )
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == [a.name for a in ATTACKS]


# -- the sample on the probe page (docs/probe.rst includes this function) ------


def check_server(host: str, port: int) -> None:
    report = run_probe(host, port, rcpt="test@example.org", timeout=5)
    assert report.error is None, report.error
    assert not report.unsafe, report.format_table()


def test_the_documented_check_passes_on_our_server() -> None:
    with running("sync", Recorder(), config=ServerConfig()) as (host, port):
        check_server(host, port)
