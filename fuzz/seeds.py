#!/usr/bin/env python3
"""The seed corpus: real SMTP transcripts, one file per session.

Theory of operation
-------------------
Coverage-guided fuzzing starts from what real peers send, so that the
first mutations already land deep in a session instead of at the
greeting.  :data:`SEEDS` holds, per target, files in the input format of
``harness.py``:

* ``server_core``: the client side of real sessions (EHLO, STARTTLS, AUTH
  PLAIN and LOGIN, MAIL with SIZE, BODY, SMTPUTF8 and DSN parameters, RCPT,
  DATA with dot-stuffing, BDAT, RSET, VRFY, QUIT, LMTP's LHLO, PROXY
  headers and XCLIENT), cut where a real client's writes would be cut;
* ``client_core``: the server side, written the way Postfix and Exim
  answer (multiline EHLO replies, RFC 2034 enhanced codes or none, 334
  challenges, LMTP's per-recipient replies), for the scripted client of
  ``client_core.py`` with the policy named in each file's header;
* ``command_parser`` and ``reply_parser``: the lines of those transcripts.

A file named ``hostile-*`` is an attack from PROTOCOL.md §3 (smuggling,
STARTTLS injection, over-long lines, reply bombs) that must end the
session cleanly; every other seed is a complete, valid session that must
run without a protocol error (``tests/test_fuzz_targets.py`` checks both).
``python3 fuzz/seeds.py`` rewrites the files under ``fuzz/corpus/``.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from harness import encode

__all__ = ["SEEDS", "write"]

CORPUS = Path(__file__).resolve().parent / "corpus"

_PLAIN = base64.b64encode(b"\x00alice\x00correct horse")
_AUTH_PLAIN = b"AUTH PLAIN " + _PLAIN + b"\r\n"
_BODY = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Lunch\r\n"
    b"Date: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
    b"Message-ID: <20240101120000.1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Caf\xc3\xa9 at noon?\r\n"
    b"..a line that started with a dot\r\n"
    b"..\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)
_END = b".\r\n"
_EHLO = b"EHLO client.example.org\r\n"
_QUIT = b"QUIT\r\n"


def _lines(*lines: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def _server_seeds() -> dict[str, bytes]:
    mail = b"MAIL FROM:<alice@example.org> SIZE=1024 BODY=8BITMIME\r\n"
    rcpts = _lines(
        b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net",
        b"RCPT TO:<carol@example.net>",
    )
    body_cut = [_BODY[:100], _BODY[100:-1], _BODY[-1:] + b".", b"\r\n"]
    proxy_v2 = (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + struct.pack("!BBH", 0x21, 0x11, 12)
        + bytes([192, 0, 2, 1, 198, 51, 100, 2])
        + struct.pack("!HH", 56324, 25)
    )
    return {
        "smtp-data.txt": encode(
            0, "0", [_EHLO, mail, rcpts[:30], rcpts[30:], b"DATA\r\n", *body_cut, _QUIT]
        ),
        "pipelined.txt": encode(
            0, "0", [_EHLO, mail + rcpts + b"DATA\r\n", _BODY + _END, b"RSET\r\nNOOP\r\nQUIT\r\n"]
        ),
        "bdat.txt": encode(
            0,
            "0",
            [
                _EHLO,
                b"MAIL FROM:<alice@example.org> BODY=BINARYMIME\r\n",
                b"RCPT TO:<bob@example.net>\r\n",
                b"BDAT 86\r\n" + _BODY[:86],
                b"BDAT %d LAST\r\n" % (len(_BODY) - 86) + _BODY[86:],
                _QUIT,
            ],
            eof=True,
        ),
        "bdat-pipelined.txt": encode(
            0,
            "0",
            [
                _EHLO,
                b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nBDAT 5\r\n",
                b"Hello",
                b"BDAT 0 LAST\r\nQUIT\r\n",
            ],
        ),
        "smtputf8-dsn.txt": encode(
            0,
            "0",
            [
                _EHLO,
                "MAIL FROM:<jörg@bücher.example> SMTPUTF8 RET=HDRS ENVID=QQ314159\r\n".encode(),
                "RCPT TO:<δοκιμή@παράδειγμα.δοκιμή> NOTIFY=NEVER\r\n".encode(),
                b"RCPT TO:<Postmaster>\r\n",
                b"DATA\r\n",
                _BODY + _END,
                _QUIT,
            ],
        ),
        "helo-misc.txt": encode(
            0,
            "0",
            [
                b"HELO [192.0.2.1]\r\n",
                b"NOOP\r\n",
                b"HELP MAIL\r\n",
                b"VRFY bob\r\n",
                b"RSET\r\n",
                b"MAIL FROM:<>\r\n",
                b"RCPT TO:<bob@[IPv6:2001:db8::1]>\r\n",
                b"DATA\r\n",
                b"Subject: bounce\r\n\r\n.\r\n",
                _QUIT,
            ],
        ),
        "lenient.txt": encode(
            1,
            "0",
            [
                b"ehlo client\r\n",
                b"mail from: <alice@example.org>\r\n",
                b"rcpt to: bob@example.net\r\n",
                b"data\r\n",
                _BODY + _END,
                b"quit\n",
            ],
        ),
        "auth-plain.txt": encode(
            2, "0", [_EHLO, _AUTH_PLAIN, mail, rcpts, b"DATA\r\n", _BODY + _END, _QUIT]
        ),
        "auth-login.txt": encode(
            2,
            "0",
            [
                _EHLO,
                b"AUTH LOGIN\r\n",
                base64.b64encode(b"alice") + b"\r\n",
                base64.b64encode(b"correct horse") + b"\r\n",
                _QUIT,
            ],
        ),
        "auth-plain-challenge.txt": encode(
            2, "0", [_EHLO, b"AUTH PLAIN\r\n", _PLAIN + b"\r\n", b"NOOP\r\n", _QUIT]
        ),
        "starttls.txt": encode(
            2,
            "0",
            [
                _EHLO,
                b"STARTTLS\r\n",
                _EHLO,
                b"AUTH PLAIN " + _PLAIN + b"\r\n",
                mail + rcpts + b"DATA\r\n",
                _BODY + _END + _QUIT,
            ],
        ),
        "lmtp.txt": encode(
            3,
            "0",
            [b"LHLO client.example.org\r\n", mail, rcpts, b"DATA\r\n", _BODY + _END, _QUIT],
        ),
        "lmtp-bdat.txt": encode(
            3,
            "0",
            [
                b"LHLO client.example.org\r\n",
                b"MAIL FROM:<alice@example.org>\r\n" + rcpts,
                b"BDAT %d LAST\r\n" % len(_BODY) + _BODY,
                _QUIT,
            ],
        ),
        "proxy-xclient.txt": encode(
            4,
            "0",
            [
                b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
                _EHLO,
                b"XCLIENT ADDR=192.0.2.7 NAME=client.example.org\r\n",
                _EHLO,
                mail,
                rcpts,
                b"DATA\r\n",
                _BODY + _END,
                _QUIT,
            ],
        ),
        "proxy-v2.bin": encode(4, "0", [proxy_v2, _EHLO, _QUIT]),
        "require-tls-auth.txt": encode(
            5,
            "0",
            [
                _EHLO,
                b"STARTTLS\r\n",
                _EHLO,
                b"AUTH PLAIN " + _PLAIN + b"\r\n",
                mail,
                rcpts,
                b"DATA\r\n",
                _BODY + _END,
                _QUIT,
            ],
        ),
        "strict-limits.txt": encode(
            6,
            "0",
            [_EHLO, mail, rcpts.split(b"\r\n")[0] + b"\r\n", b"DATA\r\n", _BODY, _END, _QUIT],
        ),
        "implicit-tls.txt": encode(
            7, "0", [_EHLO, _AUTH_PLAIN, mail, rcpts, b"DATA\r\n", _BODY + _END, _QUIT]
        ),
        # PROTOCOL.md §3, attack class 1: ends that are not CRLF.CRLF.
        "hostile-smuggling.txt": encode(
            0,
            "0",
            [
                _EHLO,
                mail + rcpts + b"DATA\r\n",
                b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\n"
                b"RCPT TO:<victim@example.net>\r\nDATA\r\n\r\n.\n\r\n.\r\r\n.\r\n",
                _QUIT,
            ],
            eof=True,
        ),
        # Attack class 3: a command pipelined after STARTTLS.
        "hostile-starttls-injection.txt": encode(
            2, "0", [_EHLO, b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n"], eof=True
        ),
        # Attack class 7: a line far over the limit, then a flood.
        "hostile-long-line.txt": encode(
            0, "0", [_EHLO, b"NOOP " + b"x" * 3000 + b"\r\n", b"NOOP\r\n" * 900], eof=True
        ),
        # RFC 3030 §2: a refused chunk's octets are read and dropped.
        "hostile-bdat-refused.txt": encode(
            0, "0", [_EHLO, b"BDAT 20\r\nRCPT TO:<x@example>\r\n", b"BDAT x\r\n"], eof=True
        ),
    }


_POSTFIX_EHLO = _lines(
    b"250-mail.example.com",
    b"250-PIPELINING",
    b"250-SIZE 10240000",
    b"250-VRFY",
    b"250-ETRN",
    b"250-STARTTLS",
    b"250-ENHANCEDSTATUSCODES",
    b"250-8BITMIME",
    b"250-DSN",
    b"250-SMTPUTF8",
    b"250 CHUNKING",
)
_POSTFIX_TLS_EHLO = _lines(
    b"250-mail.example.com",
    b"250-PIPELINING",
    b"250-SIZE 10240000",
    b"250-AUTH PLAIN LOGIN",
    b"250-ENHANCEDSTATUSCODES",
    b"250-8BITMIME",
    b"250 CHUNKING",
)
_EXIM_EHLO = _lines(
    b"250-mx.example.org Hello client.example.org [192.0.2.1]",
    b"250-SIZE 52428800",
    b"250-8BITMIME",
    b"250-PIPELINING",
    b"250-PIPECONNECT",
    b"250-AUTH PLAIN LOGIN",
    b"250-CHUNKING",
    b"250-PRDR",
    b"250 HELP",
)
_POSTFIX_GREETING = b"220 mail.example.com ESMTP Postfix (Debian/GNU)\r\n"
_EXIM_GREETING = b"220 mx.example.org ESMTP Exim 4.96 Mon, 01 Jan 2024 12:00:00 +0000\r\n"
_MAIL_OK = b"250 2.1.0 Ok\r\n"
_RCPT_OK = b"250 2.1.5 Ok\r\n"
_GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
_QUEUED = b"250 2.0.0 Ok: queued as 4B3C41234\r\n"
_BYE = b"221 2.0.0 Bye\r\n"


def _client_seeds() -> dict[str, bytes]:
    # Policies (client_core.py): "0" one plain transaction with two
    # recipients; "!" pipelining; "(" AUTH; "$" STARTTLS; '"' BDAT.
    return {
        "postfix.txt": encode(
            0,
            "0",
            [_POSTFIX_GREETING, _POSTFIX_EHLO, _MAIL_OK, _RCPT_OK, _RCPT_OK, _GO_AHEAD, _QUEUED]
            + [_BYE],
        ),
        "postfix-pipelining.txt": encode(
            0,
            "!",
            [
                _POSTFIX_GREETING,
                _POSTFIX_EHLO,
                _MAIL_OK + _RCPT_OK + _RCPT_OK + _GO_AHEAD,
                _QUEUED + _BYE,
            ],
            eof=True,
        ),
        "postfix-starttls-auth.txt": encode(
            0,
            ",",  # 0x2c: STARTTLS, AUTH, two recipients
            [
                _POSTFIX_GREETING,
                _POSTFIX_EHLO,
                b"220 2.0.0 Ready to start TLS\r\n",
                _POSTFIX_TLS_EHLO,
                b"235 2.7.0 Authentication successful\r\n",
                _MAIL_OK,
                _RCPT_OK,
                _RCPT_OK,
                _GO_AHEAD,
                _QUEUED,
                _BYE,
            ],
        ),
        "postfix-bdat.txt": encode(
            0,
            '"',
            [
                _POSTFIX_GREETING,
                _POSTFIX_EHLO,
                _MAIL_OK,
                _RCPT_OK,
                _RCPT_OK,
                b"250 2.0.0 Ok: 86 bytes\r\n",
                _QUEUED,
                _BYE,
            ],
        ),
        "postfix-rejections.txt": encode(
            0,
            "0",
            [
                _POSTFIX_GREETING,
                _POSTFIX_EHLO,
                _MAIL_OK,
                b"550 5.1.1 <b@example.net>: Recipient address rejected: User unknown\r\n",
                _RCPT_OK,
                _GO_AHEAD,
                b"554 5.7.1 Message rejected: spam\r\n",
                _BYE,
            ],
        ),
        "exim.txt": encode(
            0,
            "0",
            [
                _EXIM_GREETING,
                _EXIM_EHLO,
                b"250 OK\r\n",
                b"250 Accepted\r\n",
                b"250 Accepted\r\n",
                b'354 Enter message, ending with "." on a line by itself\r\n',
                b"250 OK id=1rXyZa-000123-AB\r\n",
                b"221 mx.example.org closing connection\r\n",
            ],
        ),
        "exim-auth-plain.txt": encode(
            0,
            "(",
            [
                _EXIM_GREETING,
                _EXIM_EHLO,
                b"235 Authentication succeeded\r\n",
                b"250 OK\r\n",
                b"250 Accepted\r\n",
                b"250 Accepted\r\n",
                b'354 Enter message, ending with "." on a line by itself\r\n',
                b"250 OK id=1rXyZa-000123-AB\r\n",
                b"221 mx.example.org closing connection\r\n",
            ],
        ),
        "exim-auth-login.txt": encode(
            0,
            "(",
            [
                _EXIM_GREETING,
                _lines(
                    b"250-mx.example.org Hello client.example.org", b"250-AUTH LOGIN", b"250 HELP"
                ),
                b"334 VXNlcm5hbWU6\r\n",
                b"334 UGFzc3dvcmQ6\r\n",
                b"235 Authentication succeeded\r\n",
                b"250 OK\r\n",
                b"250 Accepted\r\n",
                b"250 Accepted\r\n",
                b'354 Enter message, ending with "." on a line by itself\r\n',
                b"250 OK id=1rXyZa-000123-AB\r\n",
                b"221 mx.example.org closing connection\r\n",
            ],
        ),
        "multiline-greeting-8bit.txt": encode(
            1,
            "0",  # lenient client; "0" sends no 8-bit content
            [
                b"220-mx.example.net ESMTP ready\r\n220 No UCE\r\n",
                _lines(b"250-mx.example.net", b"250-8BITMIME", b"250-SMTPUTF8", b"250 DSN"),
                b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n",
                b"250 2.1.5 Recipient OK\r\n",
                b"354 go ahead\r\n",
                b"250 2.0.0 OK 1700000000 x1-20020a05\r\n",
                b"221 2.0.0 closing connection\r\n",
            ],
        ),
        "lmtp.txt": encode(
            2,
            "0",
            [
                b"220 lmtp.example.org LMTP ready\r\n",
                _lines(
                    b"250-lmtp.example.org",
                    b"250-PIPELINING",
                    b"250-ENHANCEDSTATUSCODES",
                    b"250 8BITMIME",
                ),
                b"250 2.1.0 Ok\r\n",
                b"250 2.1.5 Ok\r\n",
                b"250 2.1.5 Ok\r\n",
                b"354 Start mail input; end with <CRLF>.<CRLF>\r\n",
                b"250 2.0.0 <b@example.net> Saved\r\n",
                b"452 4.2.2 <c@example.net> Mailbox full\r\n",
                b"221 2.0.0 Bye\r\n",
            ],
        ),
        "implicit-tls.txt": encode(
            3,
            "(",
            [
                _POSTFIX_GREETING,
                _POSTFIX_TLS_EHLO,
                b"235 2.7.0 Authentication successful\r\n",
                _MAIL_OK,
                _RCPT_OK,
                _RCPT_OK,
                _GO_AHEAD,
                _QUEUED,
                _BYE,
            ],
        ),
        "small-bounds.txt": encode(
            4,
            "0",
            [
                b"220 small.example ESMTP\r\n",
                _lines(b"250-small.example", b"250-SIZE 1000000", b"250 8BITMIME"),
                b"250 OK\r\n250 OK\r\n250 OK\r\n354 go\r\n250 OK\r\n221 bye\r\n",
            ],
        ),
        # Attack class 3: a reply injected after the 220 to STARTTLS.
        "hostile-starttls-injection.txt": encode(
            0,
            "$",
            [_POSTFIX_GREETING, _POSTFIX_EHLO, b"220 2.0.0 Ready to start TLS\r\n" + _MAIL_OK],
        ),
        # Attack class 7: a reply bomb, then a line far over the limit.
        "hostile-reply-bomb.txt": encode(
            0, "0", [_POSTFIX_GREETING, b"250-x\r\n" * 300, b"250 " + b"y" * 3000 + b"\r\n"]
        ),
        "hostile-code-change.txt": encode(
            0, "0", [_POSTFIX_GREETING, b"250-mail.example.com\r\n251 PIPELINING\r\n"], eof=True
        ),
    }


def _command_seeds(server: dict[str, bytes]) -> dict[str, bytes]:
    seeds: set[bytes] = set()
    for data in server.values():
        lenient = b"\x01" if data[:1] == b"1" else b"\x00"
        for line in b"".join(data[2:].split(b"\xff\xfe")).split(b"\r\n"):
            verb = line.split(b" ", 1)[0]
            if 3 <= len(verb) <= 8 and verb.isalpha() and len(line) < 600:
                seeds.add(lenient + line)
    return {f"line-{index:02d}.txt": line for index, line in enumerate(sorted(seeds))}


def _reply_seeds(client: dict[str, bytes]) -> dict[str, bytes]:
    return {
        name: b"\x0f" + b"".join(data[2:].split(b"\xff\xfe"))
        for name, data in client.items()
        if not name.startswith("hostile-reply-bomb")
    }


def _all() -> dict[str, dict[str, bytes]]:
    server, client = _server_seeds(), _client_seeds()
    return {
        "server_core": server,
        "client_core": client,
        "command_parser": _command_seeds(server),
        "reply_parser": _reply_seeds(client),
    }


#: target -> file name -> content.
SEEDS: dict[str, dict[str, bytes]] = _all()


def write(root: Path = CORPUS) -> None:
    """Write every seed under *root*/<target>/."""
    for target, files in SEEDS.items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    write()
