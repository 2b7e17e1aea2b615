"""The trio adapter over real loopback sockets: client and server against
each other, against the blocking adapter, and the server against smtplib.

Plain pytest functions that call ``trio.run`` (no pytest-trio); every run is
bounded by ``trio.fail_after``, and no assertion depends on timing.
"""

from __future__ import annotations

import logging
import smtplib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trio

from smtpproto import Mail, Rcpt, Reply, ServerConfig, sasl
from smtpproto.flows import (
    ClientOptions,
    Envelope,
    Handler,
    Reject,
    ServerTimeouts,
    Session,
    Timeouts,
    TLSMode,
    errors,
)
from smtpproto.sync import ServerThread, SMTPClient
from smtpproto.trio import TrioSMTPClient, TrioSMTPServer

import certs

LIMIT = 15.0
CONTENT = b"Subject: hello\r\n\r\nHello, world.\r\n"
FROM = "alice@example.org"
TO = ["bob@example.org"]


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(LIMIT):
            await main()

    trio.run(bounded)


def options(**kwargs: Any) -> ClientOptions:
    kwargs.setdefault("helo_name", "client.example")
    kwargs.setdefault("server_hostname", "localhost")
    return ClientOptions(**kwargs)


def tls_client(host: str, port: int, **kwargs: Any) -> TrioSMTPClient:
    return TrioSMTPClient(host, port, options=options(**kwargs), ssl_context=certs.client_context())


class Recorder(Handler):
    """Keeps every delivered message and the names of the hooks called."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, list[str], bytes | None]] = []
        self.sessions: list[Session] = []
        self.calls: list[str] = []
        self.ended = trio.Event()

    def message(self, session: Session, envelope: Envelope) -> Reply | Sequence[Reply] | None:
        self.delivered.append((envelope.sender, envelope.recipient_addresses, envelope.content))
        self.sessions.append(session)
        return None

    def disconnect(self, session: Session) -> None:
        self.calls.append("disconnect")
        self.ended.set()


@asynccontextmanager
async def serving(handler: Handler | None = None, **kwargs: Any) -> AsyncIterator[TrioSMTPServer]:
    server = TrioSMTPServer(handler, **kwargs)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve)
        assert address == server.address
        try:
            yield server
        finally:
            server.shutdown()


class Raw:
    """A hand-driven client: write lines, read replies."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""

    async def reply(self) -> bytes:
        """One whole reply (multiline joined), or b"" at end of file."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                data = await self.stream.receive_some()
                if not data:
                    return b"".join(lines)
                self.buffer += data
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line + b"\r\n")
            if line[3:4] != b"-":
                return b"".join(lines)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


# -- basics ------------------------------------------------------------------


def test_plain_message_bytes_and_email_message() -> None:
    handler = Recorder()

    async def main() -> None:
        async with serving(handler) as server:
            host, port = server.address
            assert host == "127.0.0.1" and port > 0
            async with TrioSMTPClient(host, port, options=options(tls=TLSMode.NEVER)) as client:
                result = await client.send_message(CONTENT, FROM, TO)
                assert result.accepted == tuple(TO)
                assert result.data_reply is not None and result.data_reply.code == 250
                message = EmailMessage()
                message["From"] = FROM
                message["To"] = "carol@example.org"
                message["Bcc"] = "dave@example.org"
                message["Subject"] = "hidden"
                message.set_content("body\n")
                result = await client.send_message(message)
                assert result.accepted == ("carol@example.org", "dave@example.org")

    run(main)
    assert handler.delivered[0] == (FROM, TO, CONTENT)
    sender, recipients, content = handler.delivered[1]
    assert recipients == ["carol@example.org", "dave@example.org"]
    assert content is not None and b"Bcc" not in content and b"\r\nbody\r\n" in content
    assert handler.sessions[0].tls is False and handler.sessions[0].ehlo_name == "client.example"
    assert handler.calls == ["disconnect"]


def test_several_messages_per_connection_and_sock_argument() -> None:
    handler = Recorder()
    listener = socket.create_server(("127.0.0.1", 0))

    async def main() -> None:
        async with serving(handler, sock=listener) as server:
            assert server.address == listener.getsockname()
            async with TrioSMTPClient(*server.address, options=options()) as client:
                for number in range(5):
                    await client.send_message(b"n: %d\r\n\r\nx\r\n" % number, FROM, TO)

    run(main)
    assert [content for _, _, content in handler.delivered] == [b"n: %d\r\n\r\nx\r\n" % n for n in range(5)]
    assert handler.calls == ["disconnect"]
    assert listener.fileno() == -1  # closed with the server


def test_address_before_serve_and_client_misuse() -> None:
    with pytest.raises(RuntimeError):
        TrioSMTPServer().address

    async def main() -> None:
        client = TrioSMTPClient("127.0.0.1", 1)
        with pytest.raises(RuntimeError):
            await client.send_message(CONTENT, FROM, TO)
        await client.quit()  # nothing to do

    run(main)


def test_connection_refused_is_disconnected() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        with pytest.raises(errors.Disconnected) as info:
            async with TrioSMTPClient("127.0.0.1", port, options=options()):
                pass
        assert info.value.step == "connect" and info.value.temporary

    run(main)


# -- TLS -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [TLSMode.REQUIRED, TLSMode.OPPORTUNISTIC, TLSMode.NEVER])
def test_starttls_policies_against_a_server_offering_it(mode: TLSMode) -> None:
    handler = Recorder()

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context()) as server:
            async with tls_client(*server.address, tls=mode) as client:
                await client.send_message(CONTENT, FROM, TO)

    run(main)
    assert handler.sessions[0].tls is (mode is not TLSMode.NEVER)
    assert handler.delivered[0][2] == CONTENT


def test_starttls_policies_against_a_server_without_it() -> None:
    handler = Recorder()

    async def main() -> None:
        async with serving(handler) as server:
            async with tls_client(*server.address, tls=TLSMode.OPPORTUNISTIC) as client:
                await client.send_message(CONTENT, FROM, TO)
            with pytest.raises(errors.TLSRequired):
                async with tls_client(*server.address, tls=TLSMode.REQUIRED) as client:
                    pass

    run(main)
    assert len(handler.delivered) == 1 and handler.sessions[0].tls is False


def test_starttls_with_an_untrusted_certificate_fails_without_fallback() -> None:
    handler = Recorder()

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context()) as server:
            untrusted = TrioSMTPClient(*server.address, options=options(tls=TLSMode.OPPORTUNISTIC))
            with pytest.raises(errors.ProtocolFailure) as info:
                async with untrusted:
                    pass
            assert info.value.step == "STARTTLS"

    run(main)
    assert handler.delivered == []


def test_tls_without_a_certificate_is_refused() -> None:
    with pytest.raises(ValueError):
        TrioSMTPServer(implicit_tls=True)
    with pytest.raises(ValueError):
        TrioSMTPServer(config=ServerConfig(starttls=True))


def test_implicit_tls() -> None:
    handler = Recorder()

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context(), implicit_tls=True) as server:
            async with tls_client(*server.address, tls=TLSMode.IMPLICIT) as client:
                await client.send_message(CONTENT, FROM, TO)
            # Without a server_hostname the certificate is checked against the host.
            implicit = ClientOptions(tls=TLSMode.IMPLICIT)
            async with TrioSMTPClient(*server.address, options=implicit, ssl_context=certs.client_context()):
                pass
            # An untrusted certificate fails the connection itself.
            plain = TrioSMTPClient(*server.address, options=options(tls=TLSMode.IMPLICIT))
            with pytest.raises(errors.ProtocolFailure) as info:
                await plain.connect()
            assert info.value.step == "connect"

    run(main)
    assert handler.sessions[0].tls is True
    assert len(handler.delivered) == 1


# -- AUTH ------------------------------------------------------------------------


class PlainAuth(Recorder):
    async def auth(self, session: Session, request: object) -> object:  # type: ignore[override]
        await trio.sleep(0)
        assert isinstance(request, sasl.CheckPassword)
        return request.authcid == "alice" and request.password == "secret"


def test_auth_plain_over_tls_with_an_async_hook() -> None:
    handler = PlainAuth()
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",), require_auth=True)

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context(), config=config) as server:
            async with tls_client(*server.address, username="alice", password="secret") as client:
                await client.send_message(CONTENT, FROM, TO)
            with pytest.raises(errors.AuthFailed) as info:
                async with tls_client(*server.address, username="alice", password="wrong"):
                    pass
            assert info.value.reply is not None and info.value.reply.code == 535

    run(main)
    assert handler.sessions[0].auth_identity == "alice"
    assert len(handler.delivered) == 1


def test_auth_scram_sha_256() -> None:
    credentials = sasl.ScramCredentials.from_password("secret")

    class Scram(Recorder):
        def auth(self, session: Session, request: object) -> object:
            assert isinstance(request, sasl.LookupScram)
            return credentials if request.authcid == "alice" else None

    handler = Scram()
    config = ServerConfig(starttls=True, auth_mechanisms=("SCRAM-SHA-256",))

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context(), config=config) as server:
            async with tls_client(*server.address, username="alice", password="secret") as client:
                await client.send_message(CONTENT, FROM, TO)

    run(main)
    assert handler.sessions[0].auth_identity == "alice"


# -- hooks ------------------------------------------------------------------------


class AsyncEverything(Handler):
    """Every hook a coroutine; streaming content."""

    streaming = True

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.chunks: list[bytes] = []
        self.delivered: list[bytes] = []

    async def _note(self, name: str) -> None:
        await trio.sleep(0)
        self.calls.append(name)

    async def connect(self, session: Session) -> Reply | None:  # type: ignore[override]
        await self._note("connect")
        return Reply(code=220, text=("async.example ESMTP ready",))

    async def ehlo(self, session: Session, name: str) -> Reply | None:  # type: ignore[override]
        await self._note(f"ehlo {name}")
        return None

    async def mail(self, session: Session, mail: Mail) -> Reply | None:  # type: ignore[override]
        await self._note(f"mail {mail.reverse_path}")
        return None

    async def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:  # type: ignore[override]
        await self._note(f"rcpt {rcpt.forward_path}")
        return None

    async def message_data(self, session: Session, chunk: bytes) -> None:  # type: ignore[override]
        await trio.sleep(0)
        self.chunks.append(chunk)

    async def message(self, session: Session, envelope: Envelope) -> Reply | None:  # type: ignore[override]
        await self._note("message")
        assert envelope.content is None
        self.delivered.append(b"".join(self.chunks))
        self.chunks = []
        return Reply(code=250, text=("queued as A1",), enhanced="2.0.0")

    async def auth(self, session: Session, request: object) -> object:  # type: ignore[override]
        await self._note("auth")
        assert isinstance(request, sasl.CheckPassword)
        return request.password == "secret"

    async def vrfy(self, session: Session, text: str) -> Reply | None:  # type: ignore[override]
        await self._note(f"vrfy {text}")
        return Reply(code=550, text=("no such user",), enhanced="5.1.1")

    async def rset(self, session: Session) -> None:  # type: ignore[override]
        await self._note("rset")

    async def quit(self, session: Session) -> None:  # type: ignore[override]
        await self._note("quit")

    async def disconnect(self, session: Session) -> None:  # type: ignore[override]
        await self._note("disconnect")


def test_async_hooks_of_every_kind_with_smtplib() -> None:
    handler = AsyncEverything()
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",))
    body = b"Subject: s\r\n\r\n" + b"line\r\n" * 20000

    def conversation(host: str, port: int) -> None:
        with smtplib.SMTP(host, port, local_hostname="smtplib.example", timeout=10) as client:
            assert client.ehlo()[0] == 250
            client.starttls(context=certs.client_context())
            client.ehlo()
            client.login("alice", "secret")
            assert client.verify("nobody")[0] == 550
            client.mail(FROM)
            client.rcpt("first@example.org")
            client.rset()
            client.sendmail(FROM, ["second@example.org"], body)

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context(), config=config) as server:
            await trio.to_thread.run_sync(conversation, *server.address)

    run(main)
    assert handler.calls == [
        "connect",
        "ehlo smtplib.example",
        "ehlo smtplib.example",
        "auth",
        "vrfy nobody",
        f"mail {FROM}",
        "rcpt first@example.org",
        "rset",
        f"mail {FROM}",
        "rcpt second@example.org",
        "message",
        "quit",
        "disconnect",
    ]
    assert handler.delivered == [body]


def test_reject_and_failing_hook() -> None:
    class Picky(Recorder):
        def mail(self, session: Session, mail: Mail) -> Reply | None:
            if mail.reverse_path == "spam@example.org":
                raise Reject(Reply(code=550, text=("go away",), enhanced="5.7.1"))
            return None

        async def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:  # type: ignore[override]
            if rcpt.forward_path == "broken@example.org":
                raise RuntimeError("the hook is broken")
            return None

    handler = Picky()

    async def main() -> None:
        async with serving(handler) as server:
            async with TrioSMTPClient(*server.address, options=options()) as client:
                with pytest.raises(errors.SenderRefused) as sender:
                    await client.send_message(CONTENT, "spam@example.org", TO)
                assert sender.value.reply.code == 550 and not sender.value.temporary
                with pytest.raises(errors.RecipientsRefused) as rcpt:
                    await client.send_message(CONTENT, FROM, ["broken@example.org"])
                assert rcpt.value.replies["broken@example.org"].code == 451
                assert rcpt.value.temporary
                await client.send_message(CONTENT, FROM, TO)  # the session goes on

    run(main)
    assert [r for _, r, _ in handler.delivered] == [TO]


def test_pipelining_with_a_refused_recipient() -> None:
    class Refuser(Recorder):
        def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
            if rcpt.forward_path.startswith("nobody"):
                return Reply(code=550, text=("no such user",), enhanced="5.1.1")
            return None

    handler = Refuser()
    recipients = ["one@example.org", "nobody@example.org", "two@example.org"]

    async def main() -> None:
        async with serving(handler) as server:
            async with TrioSMTPClient(*server.address, options=options()) as client:
                result = await client.send_message(CONTENT, FROM, recipients)
        assert result.accepted == ("one@example.org", "two@example.org")
        assert result.refused["nobody@example.org"].code == 550
        assert [r.code for r in result.replies.values()] == [250, 550, 250]

    run(main)
    assert handler.delivered == [(FROM, ["one@example.org", "two@example.org"], CONTENT)]


def test_streaming_handler_and_bdat(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpproto")
    handler = AsyncEverything()
    # 70 lines of 1000 octets: BDAT without BODY=BINARYMIME keeps the line
    # limit (RFC 3030 §3), as DATA does.
    chunks = [b"Subject: chunked\r\n\r\n", (b"a" * 998 + b"\r\n") * 70, b".leading dot\r\n"]
    size = sum(map(len, chunks))

    async def main() -> None:
        async with serving(handler) as server:
            async with TrioSMTPClient(*server.address, options=options(chunking=True)) as client:
                result = await client.send_message(iter(chunks), FROM, TO, size=size)
                assert result.data_reply is not None and result.data_reply.message == "queued as A1"

    run(main)
    assert handler.delivered == [b"".join(chunks)]
    trace = [record.getMessage() for record in caplog.records]
    assert "C: BDAT 14 LAST" in trace and "C: DATA" not in trace


def test_lmtp_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "lmtp.sock")

    class Mailboxes(Recorder):
        def message(self, session: Session, envelope: Envelope) -> Sequence[Reply]:
            super().message(session, envelope)
            return [
                Reply(code=250, text=("ok",)) if r.startswith("ok") else Reply(code=452, text=("full",))
                for r in envelope.recipient_addresses
            ]

    handler = Mailboxes()

    async def main() -> None:
        async with serving(handler, unix_path=path, config=ServerConfig(lmtp=True)) as server:
            assert server.address == path
            lmtp = options(lmtp=True, tls=TLSMode.NEVER)
            async with TrioSMTPClient(unix_path=path, options=lmtp) as client:
                result = await client.send_message(CONTENT, FROM, ["ok1@x.org", "full@x.org", "ok2@x.org"])
        assert result.accepted == ("ok1@x.org", "ok2@x.org")
        assert result.refused["full@x.org"].code == 452
        assert result.replies["ok2@x.org"].code == 250

    run(main)
    assert len(handler.delivered) == 1
    assert not Path(path).exists()  # removed with the server


# -- limits, shutdown, timeouts, disconnects ------------------------------------------


def test_shutdown_mid_session_gives_421_and_keeps_accepted_messages() -> None:
    server: TrioSMTPServer

    class StopsAfterSecond(Recorder):
        def message(self, session: Session, envelope: Envelope) -> Reply | Sequence[Reply] | None:
            super().message(session, envelope)
            if len(self.delivered) == 2:
                server.shutdown()  # during a hook: its reply still goes out
            return None

    handler = StopsAfterSecond()

    async def main() -> None:
        nonlocal server
        server = TrioSMTPServer(handler)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            idle = TrioSMTPClient(*server.address, options=options())
            await idle.connect()
            async with TrioSMTPClient(*server.address, options=options()) as client:
                await client.send_message(b"n: 1\r\n\r\n", FROM, TO)
                second = await client.send_message(b"n: 2\r\n\r\n", FROM, TO)
                assert second.accepted == tuple(TO)
                with pytest.raises(errors.SMTPError) as late:
                    await client.send_message(b"n: 3\r\n\r\n", FROM, TO)
                assert late.value.temporary
            with pytest.raises(errors.SMTPError) as waiting:
                await idle.send_message(b"n: idle\r\n\r\n", FROM, TO)
            assert waiting.value.temporary
            await idle.quit()
        # serve() returned: the nursery is done.

    run(main)
    assert [content for _, _, content in handler.delivered] == [b"n: 1\r\n\r\n", b"n: 2\r\n\r\n"]


def test_shutdown_answers_421_to_a_waiting_session() -> None:
    handler = Recorder()

    async def main() -> None:
        async with serving(handler) as server:
            raw = Raw(await trio.open_tcp_stream(*server.address))
            assert (await raw.reply()).startswith(b"220 ")
            await raw.send(b"EHLO raw.example\r\n")
            assert (await raw.reply()).startswith(b"250-")
            server.shutdown()
            assert (await raw.reply()).startswith(b"421 4.3.2 ")
            assert await raw.reply() == b""
            await raw.stream.aclose()

    run(main)
    assert handler.calls == ["disconnect"]


def test_shutdown_during_data_delivers_nothing() -> None:
    handler = AsyncEverything()

    async def main() -> None:
        async with serving(handler) as server:
            raw = Raw(await trio.open_tcp_stream(*server.address))
            await raw.reply()
            await raw.send(b"EHLO raw.example\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n")
            for expected in (b"250-", b"250 ", b"250 ", b"354 "):
                assert (await raw.reply()).startswith(expected)
            await raw.send(b"Subject: cut\r\n\r\nhalf a message\r\n")
            server.shutdown()
            assert (await raw.reply()).startswith(b"421 4.3.2 ")
            await raw.stream.aclose()

    run(main)
    assert handler.delivered == [] and "message" not in handler.calls


def test_shutdown_before_serve_and_a_failing_bind(tmp_path: Path) -> None:
    async def main() -> None:
        server = TrioSMTPServer()
        server.shutdown()
        await server.serve()  # returns at once
        missing = TrioSMTPServer(unix_path=str(tmp_path / "no" / "such" / "dir"))
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError):
                await nursery.start(missing.serve)

    run(main)


def test_max_connections() -> None:
    async def main() -> None:
        async with serving(max_connections=1) as server:
            async with TrioSMTPClient(*server.address, options=options()) as first:
                with pytest.raises(errors.GreetingRefused) as info:
                    async with TrioSMTPClient(*server.address, options=options()):
                        pass
                assert info.value.reply.code == 421 and info.value.reply.enhanced == "4.3.2"
                await first.send_message(CONTENT, FROM, TO)

    run(main)


def test_client_timeout() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never speaks

    async def main() -> None:
        client = TrioSMTPClient(*silent.getsockname(), options=options(timeouts=Timeouts.all(0.5)))
        with pytest.raises(errors.Timeout) as info:
            async with client:
                pass
        assert info.value.step == "greeting" and info.value.temporary

    try:
        run(main)
    finally:
        silent.close()


@pytest.mark.parametrize("kind", ["command", "session"])
def test_server_timeouts_answer_421(kind: str) -> None:
    handler = Recorder()
    limits: dict[str, Any] = (
        {"timeouts": ServerTimeouts(command=0.5)} if kind == "command" else {"session_timeout": 0.5}
    )

    async def main() -> None:
        async with serving(handler, **limits) as server:
            raw = Raw(await trio.open_tcp_stream(*server.address))
            assert (await raw.reply()).startswith(b"220 ")
            await raw.send(b"EHLO raw.example\r\n")
            assert (await raw.reply()).startswith(b"250-")
            assert (await raw.reply()).startswith(b"421 4.4.2 ")
            assert await raw.reply() == b""
            await raw.stream.aclose()

    run(main)
    assert handler.calls == ["disconnect"]


def test_server_hanging_up_is_disconnected() -> None:
    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        host, port = listener.socket.getsockname()[:2]

        async def greet_and_hang_up() -> None:
            stream = await listener.accept()
            await stream.send_all(b"220 rude.example ESMTP\r\n")
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(greet_and_hang_up)
            with pytest.raises(errors.Disconnected) as info:
                async with TrioSMTPClient(host, port, options=options()):
                    pass
            assert info.value.temporary
        await listener.aclose()

    run(main)


def test_disconnect_mid_data_stores_nothing() -> None:
    handler = AsyncEverything()

    async def main() -> None:
        async with serving(handler) as server:
            raw = Raw(await trio.open_tcp_stream(*server.address))
            await raw.reply()
            await raw.send(b"EHLO raw.example\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n")
            for expected in (b"250-", b"250 ", b"250 ", b"354 "):
                assert (await raw.reply()).startswith(expected)
            await raw.send(b"Subject: cut\r\n\r\nhalf a mess")
            await raw.stream.aclose()

    run(main)
    assert handler.delivered == []
    assert "message" not in handler.calls and handler.calls[-1] == "disconnect"


# -- against the other adapters and the standard library --------------------------------


def test_trio_client_against_the_blocking_server() -> None:
    handler = PlainAuth()
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",))
    with ServerThread(handler, ssl_context=certs.server_context(), config=config) as server:

        async def main() -> None:
            async with tls_client(*server.address, tls=TLSMode.REQUIRED) as client:
                await client.send_message(CONTENT, FROM, TO)
                await client.send_message(CONTENT, FROM, ["carol@example.org"])

        run(main)
    assert [r for _, r, _ in handler.delivered] == [TO, ["carol@example.org"]]
    assert handler.sessions[0].tls is True


def test_blocking_client_against_the_trio_server() -> None:
    handler = PlainAuth()
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",))

    def send(host: str, port: int) -> None:
        opts = options(tls=TLSMode.REQUIRED, username="alice", password="secret")
        with SMTPClient(host, port, options=opts, ssl_context=certs.client_context()) as client:
            client.send_message(CONTENT, FROM, TO)

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context(), config=config) as server:
            await trio.to_thread.run_sync(send, *server.address)

    run(main)
    assert handler.delivered == [(FROM, TO, CONTENT)]
    assert handler.sessions[0].auth_identity == "alice"


def test_smtplib_against_the_trio_server() -> None:
    handler = Recorder()

    def send(host: str, port: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(host, port, timeout=10) as client:
            return client.sendmail(FROM, TO + ["carol@example.org"], CONTENT)

    async def main() -> None:
        async with serving(handler) as server:
            assert await trio.to_thread.run_sync(send, *server.address) == {}

    run(main)
    assert handler.delivered == [(FROM, TO + ["carol@example.org"], CONTENT)]


# -- the end of a TLS session and per-command deadlines ------------------------------


def strict_tls_quit(address: tuple[str, int], implicit: bool) -> tuple[bytes, bytes]:
    """A blocking TLS client (STARTTLS, or TLS from the first byte) that
    says QUIT and reads on with ``suppress_ragged_eofs=False``: the
    server's close without close_notify raises ``ssl.SSLEOFError``; a
    clean close reads ``b""``.  Returns (the QUIT reply, what followed)."""

    def reply(sock: Any) -> bytes:
        data = b""
        while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data

    raw = socket.create_connection(address, timeout=LIMIT)
    context = certs.client_context()
    try:
        if implicit:
            sock = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        else:
            assert reply(raw).startswith(b"220 ")
            raw.sendall(b"EHLO strict.example\r\n")
            assert b"STARTTLS" in reply(raw)
            raw.sendall(b"STARTTLS\r\n")
            assert reply(raw).startswith(b"220 ")
            sock = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        with sock:
            if implicit:
                assert reply(sock).startswith(b"220 ")
            sock.sendall(b"EHLO strict.example\r\n")
            assert reply(sock).startswith(b"250")
            sock.sendall(b"QUIT\r\n")
            return reply(sock), sock.recv(4096)
    finally:
        raw.close()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_tls_session_ends_with_close_notify(implicit: bool) -> None:
    # RFC 8446 §6.1: "Each party MUST send a close_notify alert before
    # closing its write side of the connection."
    handler = Recorder()
    outcome: list[tuple[bytes, bytes]] = []

    async def main() -> None:
        async with serving(handler, ssl_context=certs.server_context(), implicit_tls=implicit) as server:
            outcome.append(await trio.to_thread.run_sync(strict_tls_quit, server.address, implicit))
            await handler.ended.wait()

    run(main)
    [(quit_reply, after)] = outcome
    assert quit_reply.startswith(b"221 ") and after == b""


def test_trio_client_ends_tls_with_close_notify() -> None:
    # The client side of RFC 8446 §6.1: a blocking TLS server that reads
    # with suppress_ragged_eofs=False sees QUIT, then a clean end of file.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(LIMIT)
    seen: list[bytes] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(LIMIT)
            conn.sendall(b"220 strict.example\r\n")
            conn.recv(4096)  # EHLO
            conn.sendall(b"250-strict.example\r\n250 STARTTLS\r\n")
            conn.recv(4096)  # STARTTLS
            conn.sendall(b"220 go ahead\r\n")
            with certs.server_context().wrap_socket(
                conn, server_side=True, suppress_ragged_eofs=False
            ) as tls:
                tls.recv(4096)  # EHLO
                tls.sendall(b"250 strict.example\r\n")
                seen.append(tls.recv(4096))  # QUIT
                tls.sendall(b"221 bye\r\n")
                seen.append(tls.recv(4096))  # b"" only after close_notify

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, serve_one)
            client = tls_client(*listener.getsockname()[:2], tls=TLSMode.REQUIRED)
            await client.connect()
            await client.quit()

    try:
        run(main)
    finally:
        listener.close()
    assert seen == [b"QUIT\r\n", b""]


def test_trickled_command_meets_the_command_deadline() -> None:
    # RFC 5321 §4.5.3.2.7 gives a server a timeout per command: a client
    # that sends one octet of EHLO every 0.2 s meets a 0.5 s command
    # timeout before the line is complete, although no single read waits
    # that long.
    handler = Recorder()
    sent: list[int] = []

    async def main() -> None:
        async with serving(handler, timeouts=ServerTimeouts(command=0.5)) as server:
            raw = Raw(await trio.open_tcp_stream(*server.address))
            assert (await raw.reply()).startswith(b"220 ")
            answer = b""
            for octet in b"EHLO trickle.example\r\n":
                await raw.send(bytes([octet]))
                sent.append(octet)
                with trio.move_on_after(0.2):
                    answer = await raw.reply()
                if answer:
                    break
            assert answer.startswith(b"421 4.4.2 ")
            assert await raw.reply() == b""
            await raw.stream.aclose()

    run(main)
    assert len(sent) < len(b"EHLO trickle.example\r\n")
    assert handler.calls == ["disconnect"]
