"""The examples run, against software no one here wrote (smtplib)."""

from __future__ import annotations

import mailbox
import runpy
import smtplib
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def selectors_example() -> Iterator[tuple[dict[str, Any], socket.socket, list[Any], threading.Thread]]:
    module = runpy.run_path(str(EXAMPLES / "selectors_server.py"))
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[Any] = []
    thread = threading.Thread(
        target=module["serve"], args=(listener, received.append), kwargs={"max_sessions": 3}
    )
    thread.start()
    yield module, listener, received, thread
    thread.join(timeout=10)
    listener.close()
    assert not thread.is_alive()


def test_selectors_example_with_smtplib(selectors_example: Any) -> None:
    _, listener, received, thread = selectors_example
    port = listener.getsockname()[1]
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "bob@example.org, carol@example.org"
    message["Subject"] = "hello"
    message.set_content("line one\n.\n..two dots\nlast\n")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as smtp:
        code, capabilities = smtp.ehlo()
        assert code == 250 and b"PIPELINING" in capabilities
        refused = smtp.send_message(message)
        assert refused == {}
        # A second transaction on the same connection, SMTPUTF8 this time.
        smtp.sendmail("jøran@example.org", ["用户@example.org"], b"Subject: x\r\n\r\nbody\r\n",
                      mail_options=["SMTPUTF8"])
        code, _ = smtp.verify("bob")
        assert code == 252
    # A client that sends BDAT chunks (RFC 3030) is served too.
    from smtpproto.flows import ClientOptions, TLSMode
    from smtpproto.sync import SMTPClient

    options = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER, chunking=True)
    with SMTPClient("127.0.0.1", port, options=options) as client:
        assert client.send_message(b"Subject: bdat\r\n\r\nchunked\r\n", "c@example.org",
                                   ["d@example.org"]).accepted == ("d@example.org",)
    # A client that hangs up mid-DATA stores nothing.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                     b"DATA\r\nSubject: cut\r\n\r\npartial")
        sock.recv(4096)
    thread.join(timeout=10)
    assert len(received) == 3
    first, second, third = received
    assert third.content == b"Subject: bdat\r\n\r\nchunked\r\n"
    assert first.sender == "alice@example.org"
    assert first.recipients == ["bob@example.org", "carol@example.org"]
    expected = message.as_bytes().replace(b"\n", b"\r\n")
    assert first.content == expected
    assert second.sender == "jøran@example.org"
    assert second.recipients == ["用户@example.org"]
    assert second.content == b"Subject: x\r\n\r\nbody\r\n"


def test_every_example_is_tested() -> None:
    tested = {
        "selectors_server.py",
        "send_sync.py",
        "send_asyncio.py",
        "send_trio.py",
        "custom_handler_server.py",
        "async_server.py",
        "lmtp_delivery_agent.py",
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested, "add a test for the new example"


def load(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / name))


def test_send_sync_example() -> None:
    from smtpproto.flows import Handler, TLSMode
    from smtpproto.sync import ServerThread

    got: list[Any] = []

    class Keep(Handler):
        def message(self, session: Any, envelope: Any) -> None:
            got.append(envelope)

    module = load("send_sync.py")
    with ServerThread(Keep()) as server:
        host, port = server.address
        result = module["send"](host, port, "alice@example.org", ["bob@example.org"], TLSMode.NEVER)
    assert result.accepted == ("bob@example.org",)
    assert got[0].sender == "alice@example.org"
    assert b"Sent with smtpproto.sync.SMTPClient." in got[0].content


def test_custom_handler_example() -> None:
    from smtpproto.flows import TLSMode, ClientOptions
    from smtpproto.flows import errors
    from smtpproto.sync import SMTPClient, ServerThread

    module = load("custom_handler_server.py")
    handler = module["OneDomainHandler"]()
    options = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER)
    with ServerThread(handler) as server, SMTPClient(*server.address, options=options) as client:
        result = client.send_message(
            b"Subject: hello\r\n\r\nbody\r\n", "a@elsewhere.example", ["bob@example.org", "eve@evil.example"]
        )
        assert result.accepted == ("bob@example.org",)
        assert result.refused["eve@evil.example"].code == 550
        with pytest.raises(errors.MessageRefused) as info:
            client.send_message(b"No-Subject: x\r\n\r\nbody\r\n", "a@elsewhere.example", ["bob@example.org"])
        assert (info.value.reply.code, info.value.reply.enhanced) == (554, "5.6.0")
    assert [e.recipient_addresses for e in handler.received] == [["bob@example.org"]]


def test_lmtp_delivery_agent_example(tmp_path: Path) -> None:
    from smtpproto.flows import ClientOptions, TLSMode
    from smtpproto.sync import SMTPClient

    module = load("lmtp_delivery_agent.py")
    (tmp_path / "mail").mkdir()
    mailbox.Maildir(tmp_path / "mail" / "bob", create=True)  # an existing mailbox
    path = str(tmp_path / "lmtp.sock")
    server = module["serve"](path, tmp_path / "mail")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        # smtplib's LMTP reads only the first reply after the data (it has no
        # per-recipient replies), so it gets one recipient; ours gets two.
        with smtplib.LMTP(path) as lmtp:
            lmtp.ehlo("mx.example")
            assert lmtp.sendmail("a@example.org", ["bob@example.org"], b"Subject: one\r\n\r\nhi\r\n") == {}
        options = ClientOptions(helo_name="mx.example", tls=TLSMode.NEVER, lmtp=True)
        with SMTPClient(unix_path=path, options=options) as client:
            result = client.send_message(b"Subject: two\r\n\r\nhi\r\n", "a@example.org",
                                         ["bob@example.org", "nobody@example.org"])
        assert result.accepted == ("bob@example.org",)
        assert result.refused["nobody@example.org"].code == 550
    finally:
        server.shutdown()
        thread.join(10)
    stored = sorted(p.read_bytes() for p in (tmp_path / "mail" / "bob" / "new").iterdir())
    assert stored == [b"Subject: one\r\n\r\nhi\r\n", b"Subject: two\r\n\r\nhi\r\n"]


def test_send_asyncio_example() -> None:
    import asyncio

    from smtpproto.flows import Handler, TLSMode
    from smtpproto.sync import ServerThread

    got: list[Any] = []

    class Keep(Handler):
        def message(self, session: Any, envelope: Any) -> None:
            got.append(envelope)

    module = load("send_asyncio.py")
    with ServerThread(Keep()) as server:
        host, port = server.address
        result = asyncio.run(module["send"](host, port, "alice@example.org", ["bob@example.org"], TLSMode.NEVER))
    assert result.accepted == ("bob@example.org",)
    assert b"AsyncSMTPClient" in got[0].content


def test_send_trio_example() -> None:
    import trio

    from smtpproto.flows import Handler, TLSMode
    from smtpproto.sync import ServerThread

    got: list[Any] = []

    class Keep(Handler):
        def message(self, session: Any, envelope: Any) -> None:
            got.append(envelope)

    module = load("send_trio.py")
    with ServerThread(Keep()) as server:
        host, port = server.address
        result = trio.run(module["send"], host, port, "alice@example.org", ["bob@example.org"], TLSMode.NEVER)
    assert result.accepted == ("bob@example.org",)
    assert b"TrioSMTPClient" in got[0].content


def test_async_server_example() -> None:
    import asyncio

    from smtpproto.asyncio import AsyncSMTPServer
    from smtpproto.flows import ClientOptions, TLSMode
    from smtpproto.sync import SMTPClient

    module = load("async_server.py")

    async def main() -> list[Any]:
        handler = module["QueueingHandler"]({"bob@example.org"})
        server = AsyncSMTPServer(handler)
        await server.start()
        serving = asyncio.ensure_future(server.serve_forever())
        host, port = server.address[:2]
        options = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER)

        def send() -> Any:
            with SMTPClient(host, port, options=options) as client:
                return client.send_message(b"Subject: q\r\n\r\nx\r\n", "a@example.org",
                                           ["bob@example.org", "eve@example.org"])

        result = await asyncio.to_thread(send)
        await server.shutdown()
        await serving
        assert result.accepted == ("bob@example.org",)
        assert result.refused["eve@example.org"].code == 550
        return [handler.queue.get_nowait() for _ in range(handler.queue.qsize())]

    queued = asyncio.run(main())
    assert [e.recipient_addresses for e in queued] == [["bob@example.org"]]
