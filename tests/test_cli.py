"""The command line's parts, in process: the parser and its usage errors,
the trace fields, the sinks' file formats, the password file, the demo.
The commands as processes are in ``test_cli_e2e.py``."""

from __future__ import annotations

import io
import mailbox
import os
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from certs import write_files
from smtpproto import Mail, Rcpt, Reply, sasl
from smtpproto.__main__ import main
from smtpproto.cli.handler import DeliveryHandler, PasswordFile, PasswordFileError
from smtpproto.cli.received import line_ending, local_hostname, received_field, trace_fields
from smtpproto.cli.send import SendSettings, reply_line, run_send
from smtpproto.cli.serve import ServeSettings, _describe, _unix_listener
from smtpproto.cli.sinks import DiscardSink, MaildirSink, MboxSink, PrintSink, mboxrd_entry
from smtpproto.flows import Envelope, Session, TLSMode
from smtpproto.sync import ServerThread

WHEN = datetime(2025, 7, 1, 10, 0, 0, tzinfo=timezone(timedelta(hours=2)))


def envelope(sender: str = "a@example.org", *recipients: str, smtputf8: bool = False) -> Envelope:
    return Envelope(
        mail=Mail(reverse_path=sender, parameters={"SMTPUTF8": None} if smtputf8 else {}),
        recipients=[Rcpt(forward_path=r) for r in recipients or ("b@example.org",)],
        content=b"Subject: x\r\n\r\nhi\r\n",
    )


# -- the parser ------------------------------------------------------------------


def test_help_names_every_command_and_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smtpproto", "--help"], capture_output=True, text=True, check=True
    )
    assert all(name in done.stdout for name in ("serve", "send", "demo"))
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("serve", "--host --port --maildir --mbox --print --discard --max-message-size --tls-cert "
                  "--tls-key --implicit-tls --require-tls --auth-file --require-auth --lmtp --unix "
                  "--hostname --backend --workers"),
        ("send", "--host --port --from --to --helo --starttls --tls --no-tls --cafile --insecure "
                 "--user --password --lmtp --timeout --verbose FILE"),
    ],
)
def test_the_contract_options_exist(command: str, options: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    for option in options.split():
        assert re.search(rf"(^|[\s\[]){re.escape(option)}\b", text), option


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    _, cert, key = write_files(tmp_path)
    users = tmp_path / "users"
    users.write_text("alice:secret\n")
    return {"cert": str(cert), "key": str(key), "users": str(users), "tmp": str(tmp_path)}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("serve --port 0", "one of the arguments --maildir --mbox --print --discard is required"),
        ("serve --discard --print", "not allowed with argument"),
        ("serve --discard --auth-file USERS", "--auth-file needs a certificate"),
        ("serve --discard --require-auth", "--require-auth needs a certificate"),
        ("serve --discard --implicit-tls", "--implicit-tls needs a certificate"),
        ("serve --discard --require-tls", "--require-tls needs a certificate"),
        ("serve --discard --tls-key KEY", "--tls-key needs --tls-cert"),
        ("serve --discard --tls-cert CERT --tls-key KEY --require-auth", "--require-auth needs --auth-file"),
        ("serve --discard --tls-cert TMP/missing.pem", "cannot load --tls-cert"),
        ("serve --discard --tls-cert CERT --tls-key KEY --auth-file TMP/missing", "--auth-file: cannot read"),
        ("serve --discard --tls-cert CERT --tls-key KEY --auth-file CERT", "expected user:password"),
        ("serve --discard --max-message-size 10", "--max-message-size must be an integer of at least"),
        ("serve --discard --hostname bad_name!", "--hostname: "),
        ("serve --discard --workers 2 --unix TMP/s", "--workers shares a TCP port"),
        ("serve --discard --workers 0", "must be at least 1"),
        ("serve --discard --port 70000", "not a TCP port"),
        ("serve --discard --backend curio", "invalid choice"),
        ("send --from a@example.org", "the following arguments are required: --to"),
        ("send --from a@example.org --to b@example.org --no-tls --user u --password p",
         "--user with --no-tls: credentials are never sent without TLS"),
        ("send --from a@example.org --to b@example.org --password p", "--password needs --user"),
        ("send --from a@example.org --to b@example.org --no-tls --insecure", "need TLS"),
        ("send --from a@example.org --to b@example.org --tls --no-tls", "not allowed with argument"),
        ("send --from a@example.org --to b@example.org --user u", "--user needs --password"),
        ("send --from a@example.org --to bob", "--to 'bob'"),
        ("send --from a@example.org --to b@example.org --timeout 0", "--timeout must be positive"),
        ("send --from a@example.org --to b@example.org --cafile TMP/missing.pem", "--cafile"),
        ("send --from a@example.org --to b@example.org TMP/missing.eml", "cannot read"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    arguments: str, message: str, tls_files: dict[str, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SMTPPROTO_PASSWORD", raising=False)
    replace = {"USERS": tls_files["users"], "CERT": tls_files["cert"], "KEY": tls_files["key"]}
    argv = [replace.get(word, word.replace("TMP", tls_files["tmp"])) for word in arguments.split()]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- trace fields ------------------------------------------------------------------


def test_received_field() -> None:
    session = Session(peer=("192.0.2.1", 4321), ehlo_name="client.example")
    field = received_field(session, envelope(), hostname="mx.example", now=WHEN)
    assert field == (
        b"Received: from client.example ([192.0.2.1])\r\n"
        b"\tby mx.example with ESMTP for <b@example.org>;\r\n"
        b"\tTue, 01 Jul 2025 10:00:00 +0200\r\n"
    )


@pytest.mark.parametrize(
    ("peer", "tls", "identity", "lmtp", "smtputf8", "expected"),
    [
        (("2001:db8::1", 25, 0, 0), True, None, False, False, b"from c.example ([IPv6:2001:db8::1])\r\n\tby mx with ESMTPS;"),
        (("::ffff:192.0.2.7", 25, 0, 0), True, "u", False, False, b"([192.0.2.7])\r\n\tby mx with ESMTPSA;"),
        ("", False, "u", False, False, b"from c.example\r\n\tby mx with ESMTPA;"),  # a Unix socket
        (None, False, None, True, False, b"from c.example\r\n\tby mx with LMTP;"),
        (("fe80::1%eth0", 25, 0, 2), True, None, True, False, b"([IPv6:fe80::1])\r\n\tby mx with LMTPS;"),
        (("not an address", 25), False, None, False, True, b"from c.example\r\n\tby mx with UTF8SMTP;"),
    ],
)
def test_received_field_variants(
    peer: Any, tls: bool, identity: str | None, lmtp: bool, smtputf8: bool, expected: bytes
) -> None:
    session = Session(peer=peer, tls=tls, auth_identity=identity, ehlo_name="c.example")
    mail = envelope("a@example.org", "b@example.org", "c@example.org", smtputf8=smtputf8)
    field = received_field(session, mail, hostname="mx", lmtp=lmtp, now=WHEN)
    assert expected in field and b" for <" not in field  # two recipients: no "for"


def test_trace_fields_follow_the_content_line_ends() -> None:
    session = Session(peer=("127.0.0.1", 1), ehlo_name="c.example")
    lf = trace_fields(session, envelope(""), b"Subject: x\n\nhi\n", hostname="mx")
    assert lf.startswith(b"Return-Path: <>\nReceived: from c.example ([127.0.0.1])\n\tby mx with ESMTP")
    assert b"\r" not in lf
    crlf = trace_fields(session, envelope(), b"Subject: x\r\n\r\nhi\r\n", hostname="mx")
    assert crlf.startswith(b"Return-Path: <a@example.org>\r\nReceived: ") and crlf.endswith(b"\r\n")
    assert line_ending(b"") == line_ending(b"one line") == b"\r\n"


def test_local_hostname_never_asks_the_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda *a: pytest.fail("DNS lookup"))
    monkeypatch.setattr(socket, "gethostname", lambda: "box.example.")
    assert local_hostname() == "box.example"
    for bad in ("", "under_score", "-dash", "a..b", "ünï"):
        monkeypatch.setattr(socket, "gethostname", lambda bad=bad: bad)
        assert local_hostname() == "localhost"


# -- sinks -----------------------------------------------------------------------------


def test_maildir_sink_writes_the_bytes_as_given(tmp_path: Path) -> None:
    sink = MaildirSink(tmp_path / "Maildir")
    message = b"Return-Path: <a@b>\r\nSubject: x\r\n\r\nbare\nLF kept\r\n"
    where = sink.store("a@b", message)
    assert Path(where).read_bytes() == message
    assert Path(where).parent == tmp_path / "Maildir" / "new"
    assert len(mailbox.Maildir(str(tmp_path / "Maildir"))) == 1


def test_mboxrd_entry_quotes_every_from_line() -> None:
    message = b"From: a@b\r\n\r\nFrom x\r\n>From y\r\n>>From z\r\nFromage\r\n >From w\r\nno end"
    entry = mboxrd_entry("a@b", message, when=0)
    assert entry == (
        b"From a@b Thu Jan  1 00:00:00 1970\n"
        b"From: a@b\n\n>From x\n>>From y\n>>>From z\nFromage\n >From w\nno end\n\n"
    )
    assert mboxrd_entry("", b"x\n", when=0).startswith(b"From MAILER-DAEMON ")
    # Reading back: drop one ">" from each "^>+From " line; lossless.
    body = entry.split(b"\n", 1)[1][:-1]
    assert re.sub(rb"(?m)^>(>*From )", rb"\1", body) == message.replace(b"\r\n", b"\n") + b"\n"


def test_mbox_and_print_sinks(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    sink = MboxSink(path)
    assert sink.store("a@b", b"Subject: 1\r\n\r\nFrom here\r\n") == str(path)
    sink.store("", b"Subject: 2\r\n\r\nthere\r\n")
    box = mailbox.mbox(str(path))
    try:
        assert [m["Subject"] for m in box] == ["1", "2"]
        assert box[0].get_from().startswith("a@b ")  # the separator line
    finally:
        box.close()
    stream = io.BytesIO()
    assert PrintSink(stream).store("a@b", b"x\r\n") == "<stdout>"
    assert stream.getvalue().startswith(b"From a@b ") and stream.getvalue().endswith(b"\nx\n\n")
    with pytest.raises(OSError):
        MboxSink(tmp_path / "missing" / "mbox")


# -- AUTH from a password file -----------------------------------------------------------


def test_password_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# comment\n\nalice:s3cret\nbob:with:colon\ncarol:I\u00adX\n")
    users = PasswordFile(path)
    assert users.check("alice", "s3cret") and not users.check("alice", "S3cret")
    assert users.check("bob", "with:colon") and not users.check("nobody", "x")
    assert users.check("carol", "IX")  # SASLprep: the soft hyphen maps to nothing
    assert not users.check("alice", "s3cret", authzid="bob") and users.check("alice", "s3cret", "alice")
    assert not users.check("alice", "\x07")  # not preparable: compared as is
    assert users.answer(sasl.CheckPassword(authcid="alice", password="s3cret")) is True
    assert users.answer(sasl.LookupPassword(authcid="bob")) == "with:colon"
    scram = users.answer(sasl.LookupScram(authcid="alice"))
    assert isinstance(scram, sasl.ScramCredentials) and users.scram("alice") is scram
    assert users.answer(sasl.LookupScram(authcid="nobody")) is None
    assert users.answer(sasl.CheckToken(user="alice", token="t")) is None
    for text in ("alice\n", ":pw\n", "alice:\n", "# only a comment\n"):
        path.write_text(text)
        with pytest.raises(PasswordFileError):
            PasswordFile(path)


def test_discarding_handler_streams_into_nothing() -> None:
    handler = DeliveryHandler(DiscardSink(), hostname="mx")
    assert handler.streaming
    stream = Envelope(mail=Mail(reverse_path=""), recipients=[Rcpt(forward_path="b@example.org")])
    assert handler.message(Session(), stream) is None
    assert handler.auth(Session(), sasl.LookupPassword(authcid="x")) is None  # no password file


# -- serve and send details ------------------------------------------------------------------


def test_listening_sockets_and_their_names(tmp_path: Path) -> None:
    settings = ServeSettings(host="127.0.0.1", port=0, discard=True, workers=2)
    first, second = settings.listen()
    with first, second:
        assert first.getsockname() == second.getsockname()  # SO_REUSEPORT
        assert _describe(first) == f"127.0.0.1:{first.getsockname()[1]}"
    if socket.has_ipv6:
        try:
            (six,) = ServeSettings(host="::1", port=0, discard=True).listen()
        except OSError:
            pass  # no IPv6 loopback here
        else:
            with six:
                assert _describe(six) == f"[::1]:{six.getsockname()[1]}"
    path = str(tmp_path / "s")
    with _unix_listener(path) as live:
        assert _describe(live) == path
        with pytest.raises(OSError, match="already listening"):
            _unix_listener(path)
    with _unix_listener(path):  # the stale socket file is replaced
        pass
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError):
        _unix_listener(str(tmp_path / "f"))  # never another kind of file


def test_reply_line() -> None:
    assert reply_line("a@b", Reply(code=550, enhanced="5.1.1", text=("No", "such user"))) == "a@b: 550 5.1.1 No such user"
    assert reply_line("a@b", Reply(code=450, text=("Busy",))) == "a@b: 450 Busy"


def test_send_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTPPROTO_PASSWORD", "from-the-environment")
    out, err = io.StringIO(), io.StringIO()
    with ServerThread() as server:
        host, port = server.address
        settings = SendSettings(
            host=host, port=port, sender="a@example.org", recipients=("b@example.org",),
            tls=TLSMode.NEVER, verbose=True, timeout=10,
        )
        assert run_send(settings, out=out, err=err, stdin=io.BytesIO(b"Subject: x\n\nhi\n")) == 0
    assert err.getvalue() == "" and " -> hi" in out.getvalue()
    # --user makes STARTTLS required; the password can come from the environment.
    assert SendSettings(sender="", recipients=("b@c",), user="u").tls_mode() is TLSMode.REQUIRED
    assert SendSettings(sender="", recipients=("b@c",), tls=TLSMode.IMPLICIT).real_port() == 465
    assert SendSettings(sender="", recipients=("b@c",), lmtp=True).real_port() == 24
    assert SendSettings(sender="", recipients=("b@c",)).real_port() == 25


def test_demo_in_process(tmp_path: Path) -> None:
    from smtpproto.cli.demo import run_demo

    out = io.StringIO()
    assert run_demo(out, directory=str(tmp_path)) == 0
    text = out.getvalue()
    assert " -> QUIT" in text and "<-  221 2.0.0 Bye" in text
    (stored,) = os.listdir(tmp_path / "Maildir" / "new")
    assert f"stored the message in {tmp_path / 'Maildir' / 'new' / stored}" in text
    assert "Return-Path: <alice@example.org>\nReceived: from " in text
