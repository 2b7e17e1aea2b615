"""The asyncio adapter end to end over loopback (and a Unix socket).

Each test runs its own event loop with ``asyncio.run`` under a bound, so a
hang fails instead of blocking the suite.  Nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import certs
import pytest

from smtpproto import Reply, ServerConfig
from smtpproto.asyncio import AsyncSMTPClient, AsyncSMTPServer
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
from smtpproto.sasl import CheckPassword, LookupScram, ScramCredentials
from smtpproto.sync import ServerThread, SMTPClient

T = TypeVar("T")
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"
SENDER, RCPT = "a@example.org", "b@example.org"


def run(main: Callable[[], Awaitable[T]], limit: float = 15.0) -> T:
    """Run *main* in a fresh event loop, failing after *limit* seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await main()

    return asyncio.run(bounded())


def options(**kwargs: Any) -> ClientOptions:
    kwargs.setdefault("helo_name", "client.example")
    kwargs.setdefault("server_hostname", "localhost")
    kwargs.setdefault("timeouts", Timeouts.all(10))
    return ClientOptions(**kwargs)


class Store(Handler):
    """Keeps every message with the session state it arrived in."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.tls: list[bool] = []
        self.identities: list[str | None] = []

    async def message(self, session: Session, envelope: Envelope) -> Reply | None:
        await asyncio.sleep(0)
        self.messages.append(envelope)
        self.tls.append(session.tls)
        self.identities.append(session.auth_identity)
        return None


class Auth(Store):
    """Store with a coroutine verifier: ``user`` / ``secret``."""

    async def auth(self, session: Session, request: object) -> object:
        await asyncio.sleep(0)
        if isinstance(request, CheckPassword):
            return request.authcid == "user" and request.password == "secret"
        if isinstance(request, LookupScram) and request.authcid == "user":
            return ScramCredentials.from_password("secret", iterations=4096)
        return None


async def send(address: Any, message: bytes = MESSAGE, **kwargs: Any) -> Any:
    """One message to RCPT with a fresh client; returns the result."""
    client_kwargs = {k: kwargs.pop(k) for k in ("ssl_context", "unix_path") if k in kwargs}
    async with AsyncSMTPClient(*address, options=options(**kwargs), **client_kwargs) as client:
        return await client.send_message(message, SENDER, [RCPT])


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multiline) reply from a raw connection."""
    lines = b""
    while True:
        line = await reader.readline()
        lines += line
        if len(line) < 4 or line[3:4] != b"-":
            return lines


async def raw_session(address: Any, *commands: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, read the greeting, and send *commands* one by one (each answered)."""
    reader, writer = await asyncio.open_connection(*address)
    assert (await read_reply(reader)).startswith(b"220")
    for command in commands:
        writer.write(command)
        await read_reply(reader)
    return reader, writer


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


# -- the basics ---------------------------------------------------------------


def test_plain_message_and_address() -> None:
    store = Store()

    async def main() -> None:
        async with AsyncSMTPServer(store) as server:
            host, port = server.address
            assert host == "127.0.0.1" and port > 0
            async with AsyncSMTPClient(*server.address) as client:  # default options
                result = await client.send_message(MESSAGE, SENDER, [RCPT])
        assert result.accepted == (RCPT,)
        assert result.data_reply.code == 250

    run(main)
    assert [m.content for m in store.messages] == [MESSAGE]
    assert store.messages[0].sender == SENDER and store.tls == [False]


def test_many_messages_on_one_connection() -> None:
    store = Store()

    async def main() -> None:
        async with AsyncSMTPServer(store) as server:
            async with AsyncSMTPClient(*server.address, options=options(tls=TLSMode.NEVER)) as client:
                for index in range(25):
                    await client.send_message(b"Subject: %d\r\n\r\nbody\r\n" % index, SENDER, [RCPT])

    run(main)
    assert [m.content for m in store.messages] == [b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(25)]


def test_pipelined_recipients_with_one_refused(caplog: pytest.LogCaptureFixture) -> None:
    class Picky(Store):
        async def rcpt(self, session: Session, rcpt: Any) -> Reply | None:
            if rcpt.forward_path.startswith("bad"):
                raise Reject(Reply(code=550, enhanced="5.1.1", text=("no such user",)))
            return None

    store = Picky()
    recipients = ["one@example.org", "bad@example.org", "two@example.org"]

    async def main() -> Any:
        async with AsyncSMTPServer(store) as server:
            async with AsyncSMTPClient(*server.address, options=options(tls=TLSMode.NEVER)) as client:
                return await client.send_message(MESSAGE, SENDER, recipients)

    with caplog.at_level(logging.DEBUG, logger="smtpproto"):
        result = run(main)
    assert result.accepted == ("one@example.org", "two@example.org")
    assert result.refused["bad@example.org"].code == 550
    assert store.messages[0].recipient_addresses == ["one@example.org", "two@example.org"]
    # The client pipelined: MAIL, every RCPT and DATA went out before the
    # first reply came back.
    trace = [r.getMessage() for r in caplog.records if r.getMessage()[:3] in ("C: ", "S: ")]
    mail = next(i for i, line in enumerate(trace) if line.startswith("C: MAIL"))
    first_reply = next(i for i in range(mail, len(trace)) if trace[i].startswith("S: "))
    assert [line.split()[1] for line in trace[mail:first_reply]] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]


def test_bdat_client(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    content = b"Subject: big\r\n\r\n" + b"line of text\r\n" * 20000

    async def main() -> None:
        async with AsyncSMTPServer(store) as server:
            await send(server.address, content, tls=TLSMode.NEVER, chunking=True)

    with caplog.at_level(logging.DEBUG, logger="smtpproto"):
        run(main)
    assert store.messages[0].content == content
    assert "C: BDAT" in caplog.text and "C: DATA" not in caplog.text


def test_streaming_handler_gets_chunks_and_commits_at_the_end() -> None:
    class Streaming(Handler):
        streaming = True

        def __init__(self) -> None:
            self.staged: list[bytes] = []
            self.committed: list[bytes] = []

        async def message_data(self, session: Session, chunk: bytes) -> None:
            await asyncio.sleep(0)
            self.staged.append(chunk)

        async def message(self, session: Session, envelope: Envelope) -> None:
            assert envelope.content is None
            self.committed.append(b"".join(self.staged))
            self.staged = []

    handler = Streaming()
    content = b"Subject: big\r\n\r\n" + b".starts with a dot\r\n" + b"0123456789\r\n" * 30000

    async def main() -> None:
        async with AsyncSMTPServer(handler) as server:
            await send(server.address, content, tls=TLSMode.NEVER)

    run(main)
    assert handler.committed == [content]


# -- hooks --------------------------------------------------------------------


def test_coroutine_hooks_of_every_kind_with_smtplib() -> None:
    calls: list[str] = []

    class Every(Handler):
        streaming = True

        async def connect(self, session: Session) -> Reply:
            calls.append("connect")
            return Reply(code=220, text=("async.example ready",))

        async def ehlo(self, session: Session, name: str) -> None:
            calls.append(f"ehlo {name}")

        async def mail(self, session: Session, mail: Any) -> None:
            calls.append(f"mail {mail.reverse_path}")

        async def rcpt(self, session: Session, rcpt: Any) -> None:
            calls.append(f"rcpt {rcpt.forward_path}")

        async def message_data(self, session: Session, chunk: bytes) -> None:
            calls.append("data")

        async def message(self, session: Session, envelope: Envelope) -> Reply:
            calls.append("message")
            return Reply(code=250, enhanced="2.0.0", text=("queued as A1",))

        async def vrfy(self, session: Session, text: str) -> Reply:
            calls.append(f"vrfy {text}")
            return Reply(code=252, enhanced="2.1.5", text=("maybe",))

        async def rset(self, session: Session) -> None:
            calls.append("rset")

        async def quit(self, session: Session) -> None:
            calls.append("quit")

        async def disconnect(self, session: Session) -> None:
            calls.append("disconnect")

    def client(address: tuple[str, int]) -> tuple[Any, ...]:
        with smtplib.SMTP(*address, local_hostname="lib.example", timeout=10) as smtp:
            greeting = smtp.ehlo()
            verified = smtp.verify("someone")
            smtp.rset()
            refused = smtp.sendmail(SENDER, [RCPT], MESSAGE)
            return greeting[0], verified, refused

    async def main() -> tuple[Any, ...]:
        async with AsyncSMTPServer(Every()) as server:
            answers = await asyncio.to_thread(client, server.address)
            while "disconnect" not in calls:  # the session ends after smtplib's QUIT
                await asyncio.sleep(0.01)
            return answers

    code, verified, refused = run(main)
    assert code == 250 and verified == (252, b"2.1.5 maybe") and refused == {}
    assert calls == [
        "connect", "ehlo lib.example", "vrfy someone", "rset",
        f"mail {SENDER}", f"rcpt {RCPT}", "data", "message", "quit", "disconnect",
    ]


def test_reject_and_failing_hooks(caplog: pytest.LogCaptureFixture) -> None:
    class Moody(Store):
        async def mail(self, session: Session, mail: Any) -> None:
            if mail.reverse_path == "spam@example.org":
                raise Reject(Reply(code=550, enhanced="5.7.1", text=("go away",)))
            if mail.reverse_path == "crash@example.org":
                raise RuntimeError("the database is down")

    store = Moody()

    async def main() -> tuple[errors.SMTPError, errors.SMTPError]:
        async with AsyncSMTPServer(store) as server:
            async with AsyncSMTPClient(*server.address, options=options(tls=TLSMode.NEVER)) as client:
                with pytest.raises(errors.SenderRefused) as rejected:
                    await client.send_message(MESSAGE, "spam@example.org", [RCPT])
                with pytest.raises(errors.SenderRefused) as failed:
                    await client.send_message(MESSAGE, "crash@example.org", [RCPT])
                await client.send_message(MESSAGE, SENDER, [RCPT])  # the session goes on
        return rejected.value, failed.value

    rejected, failed = run(main)
    assert rejected.reply.code == 550 and not rejected.temporary
    assert failed.reply.code == 451 and failed.reply.enhanced == "4.3.0" and failed.temporary
    assert "the database is down" in caplog.text
    assert len(store.messages) == 1


# -- TLS and AUTH ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [TLSMode.REQUIRED, TLSMode.OPPORTUNISTIC, TLSMode.NEVER])
def test_starttls_policies_against_a_tls_server(mode: TLSMode) -> None:
    store = Store()

    async def main() -> None:
        async with AsyncSMTPServer(store, ssl_context=certs.server_context()) as server:
            await send(server.address, tls=mode, ssl_context=certs.client_context())

    run(main)
    assert store.tls == [mode is not TLSMode.NEVER]


def test_starttls_required_but_not_offered() -> None:
    store = Store()

    async def main() -> None:
        async with AsyncSMTPServer(store) as server:
            with pytest.raises(errors.TLSRequired):
                await send(server.address, tls=TLSMode.REQUIRED, ssl_context=certs.client_context())
            await send(server.address, tls=TLSMode.OPPORTUNISTIC, ssl_context=certs.client_context())

    run(main)
    assert store.tls == [False]


def test_starttls_with_an_untrusted_certificate_never_falls_back() -> None:
    store = Store()

    async def main() -> errors.SMTPError:
        async with AsyncSMTPServer(store, ssl_context=certs.server_context()) as server:
            client = AsyncSMTPClient(
                *server.address, options=options(tls=TLSMode.OPPORTUNISTIC),
                ssl_context=ssl.create_default_context(),  # does not know the test CA
            )
            with pytest.raises(errors.ProtocolFailure) as failure:
                await client.connect()
            await client.quit()
            return failure.value

    assert run(main).step == "STARTTLS"
    assert store.messages == []


def test_tls_without_a_certificate_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        AsyncSMTPServer(implicit_tls=True)
    with pytest.raises(ValueError):
        AsyncSMTPServer(config=ServerConfig(starttls=True))


def test_implicit_tls() -> None:
    store = Store()

    async def main() -> None:
        server = AsyncSMTPServer(store, ssl_context=certs.server_context(), implicit_tls=True)
        async with server:
            # Without server_hostname the certificate is checked against the host (127.0.0.1).
            await send(
                server.address, tls=TLSMode.IMPLICIT, ssl_context=certs.client_context(),
                server_hostname=None,
            )
            with pytest.raises(errors.ProtocolFailure):  # the CA is not trusted
                await send(server.address, tls=TLSMode.IMPLICIT, ssl_context=ssl.create_default_context())

    run(main)
    assert store.tls == [True]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_auth_over_starttls_with_a_coroutine_verifier(mechanism: str) -> None:
    store = Auth()
    config = ServerConfig(starttls=True, auth_mechanisms=(mechanism,), require_auth=True)

    async def main() -> errors.SMTPError:
        async with AsyncSMTPServer(store, config=config, ssl_context=certs.server_context()) as server:
            await send(
                server.address, tls=TLSMode.REQUIRED, ssl_context=certs.client_context(),
                username="user", password="secret",
            )
            with pytest.raises(errors.AuthFailed) as refused:
                await send(
                    server.address, tls=TLSMode.REQUIRED, ssl_context=certs.client_context(),
                    username="user", password="wrong",
                )
            return refused.value

    refused = run(main)
    assert refused.reply is not None and refused.reply.code == 535
    assert store.identities == ["user"] and store.tls == [True]


def test_cleartext_queued_behind_starttls_is_never_read_as_encrypted() -> None:
    # An attacker pipelines NOOPs so that STARTTLS ends exactly where the
    # server's read stops (65536 octets), with EHLO and MAIL behind it: the
    # core never sees them before the handshake, so the adapter must refuse
    # to start TLS with it waiting (RFC 3207 §6), never hand it on as if it
    # had come through TLS.
    seen: list[tuple[bool, str]] = []

    class Victim(Handler):
        async def ehlo(self, session: Session, name: str) -> None:
            entered.set()
            await gate.wait()  # holds the session until the whole burst arrived

        async def mail(self, session: Session, mail: Any) -> None:
            seen.append((session.tls, mail.reverse_path))

    noop = b"NOOP " + b"x" * 505 + b"\r\n"  # 512 octets, the longest command line
    burst = noop * 127 + b"NOOP " + b"x" * 495 + b"\r\n" + b"STARTTLS\r\n"
    assert len(burst) == 65536

    async def main() -> bytes:
        async with AsyncSMTPServer(Victim(), ssl_context=certs.server_context()) as server:
            reader, writer = await raw_session(server.address)
            writer.write(b"EHLO attacker.example\r\n")
            await entered.wait()
            writer.write(burst + b"EHLO evil.example\r\nMAIL FROM:<evil@example.org>\r\n")
            await writer.drain()
            while writer.transport.get_write_buffer_size():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # let the server's loop read the burst
            gate.set()
            line = b""
            while not line.startswith(b"220 ") and not reader.at_eof():
                line = await reader.readline()
            if line.startswith(b"220 "):
                try:
                    await writer.start_tls(certs.client_context(), server_hostname="localhost")
                    writer.write(b"QUIT\r\n")
                    line = await reader.read()
                except OSError:
                    line = b"handshake refused"
            await close_raw(writer)
            return line

    entered, gate = asyncio.Event(), asyncio.Event()
    answer = run(main)
    assert seen == []
    assert answer in (b"handshake refused", b"")


# -- LMTP over a Unix socket -------------------------------------------------------


def test_lmtp_over_a_unix_socket(tmp_path: Path) -> None:
    class Mailboxes(Handler):
        def __init__(self) -> None:
            self.delivered: list[str] = []

        async def message(self, session: Session, envelope: Envelope) -> list[Reply]:
            replies = []
            for address in envelope.recipient_addresses:
                if address.startswith("full"):
                    replies.append(Reply(code=452, enhanced="4.2.2", text=("mailbox full",)))
                else:
                    self.delivered.append(address)
                    replies.append(Reply(code=250, enhanced="2.0.0", text=("delivered",)))
            return replies

    handler = Mailboxes()
    path = str(tmp_path / "lmtp.sock")

    async def main() -> Any:
        async with AsyncSMTPServer(handler, unix_path=path, config=ServerConfig(lmtp=True)) as server:
            assert server.address == path
            client = AsyncSMTPClient(options=options(lmtp=True, tls=TLSMode.NEVER), unix_path=path)
            async with client:
                return await client.send_message(MESSAGE, SENDER, ["one@example.org", "full@example.org"])

    result = run(main)
    assert result.accepted == ("one@example.org",)
    assert result.refused["full@example.org"].code == 452
    assert handler.delivered == ["one@example.org"]


# -- limits, timeouts, disconnects, shutdown -----------------------------------------


def test_max_connections() -> None:
    async def main() -> errors.SMTPError:
        async with AsyncSMTPServer(max_connections=1) as server:
            async with AsyncSMTPClient(*server.address, options=options(tls=TLSMode.NEVER)):
                second = AsyncSMTPClient(*server.address, options=options(tls=TLSMode.NEVER))
                with pytest.raises(errors.GreetingRefused) as refused:
                    await second.connect()
                await second.quit()
            await send(server.address, tls=TLSMode.NEVER)  # a free place again
            return refused.value

    refused = run(main)
    assert refused.reply.code == 421 and refused.reply.enhanced == "4.3.2" and refused.temporary


def test_client_timeout_against_a_silent_server() -> None:
    # A listening socket that never accepts: the connection completes in the
    # backlog and the greeting never comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:

        async def main() -> errors.SMTPError:
            client = AsyncSMTPClient(*silent.getsockname(), options=options(timeouts=Timeouts.all(0.5)))
            with pytest.raises(errors.Timeout) as timeout:
                await client.connect()
            await client.quit()
            return timeout.value

        failure = run(main)
    assert failure.step == "greeting" and failure.temporary


def test_send_before_connect() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError):
            await AsyncSMTPClient().send_message(MESSAGE, SENDER, [RCPT])

    run(main)


def test_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        address = probe.getsockname()

    async def main() -> None:
        with pytest.raises(errors.Disconnected) as lost:
            await send(address)
        assert lost.value.step == "connect"

    run(main)


@pytest.mark.parametrize(
    "server",
    [
        lambda: AsyncSMTPServer(timeouts=ServerTimeouts(command=0.5)),
        # The command timeout is the default five minutes: the cap ends it.
        lambda: AsyncSMTPServer(session_timeout=0.5),
    ],
    ids=["command", "session"],
)
def test_server_timeouts_answer_421(server: Callable[[], AsyncSMTPServer]) -> None:
    async def main() -> bytes:
        async with server() as running:
            reader, writer = await raw_session(running.address, b"EHLO raw.example\r\n")
            rest = await reader.read()  # the server speaks, then closes
            await close_raw(writer)
            return rest

    assert run(main) == b"421 4.4.2 Timeout, closing connection\r\n"


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_data_stores_nothing(how: str) -> None:
    ended = []

    class Recorder(Store):
        async def disconnect(self, session: Session) -> None:
            ended.append(session.ehlo_name)

    store = Recorder()

    async def main() -> None:
        async with AsyncSMTPServer(store) as server:
            reader, writer = await raw_session(
                server.address, b"EHLO raw.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
                b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n",
            )
            writer.write(b"Subject: cut\r\n\r\nhalf a mess")
            await writer.drain()
            if how == "reset":  # RST instead of FIN: the server's read fails
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            await close_raw(writer)
            while not ended:
                await asyncio.sleep(0.01)

    run(main)
    assert ended == ["raw.example"] and store.messages == []


def test_shutdown_cancels_a_stuck_hook_after_its_timeout() -> None:
    class Stuck(Store):
        async def message(self, session: Session, envelope: Envelope) -> None:
            entered.set()
            await asyncio.Event().wait()  # never returns

    store = Stuck()

    async def main() -> errors.SMTPError:
        server = AsyncSMTPServer(store)
        await server.start()
        client = AsyncSMTPClient(*server.address, options=options(tls=TLSMode.NEVER))
        await client.connect()
        sending = asyncio.create_task(client.send_message(MESSAGE, SENDER, [RCPT]))
        await entered.wait()
        await server.shutdown(timeout=0.2)
        with pytest.raises(errors.SMTPError) as lost:
            await sending
        await client.quit()
        return lost.value

    entered = asyncio.Event()
    assert run(main).temporary
    assert store.messages == []


def test_back_pressure_both_ways() -> None:
    # A slow streaming handler: the server stops reading when its buffer is
    # full, and the client waits for its writes to drain.
    class Slow(Handler):
        streaming = True

        def __init__(self) -> None:
            self.size = 0
            self.sizes: list[int] = []

        async def message_data(self, session: Session, chunk: bytes) -> None:
            self.size += len(chunk)
            await asyncio.sleep(0.002)

        async def message(self, session: Session, envelope: Envelope) -> None:
            self.sizes.append(self.size)

    handler = Slow()
    content = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 4000

    async def main() -> None:
        async with AsyncSMTPServer(handler) as server:
            await send(server.address, content, tls=TLSMode.NEVER)

    run(main)
    assert handler.sizes == [len(content)]


def test_shutdown_mid_session_keeps_the_accepted_message() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow(Store):
        async def message(self, session: Session, envelope: Envelope) -> Reply | None:
            entered.set()
            await release.wait()
            return await super().message(session, envelope)

    store = Slow()

    async def main() -> tuple[Any, bytes, errors.SMTPError]:
        server = AsyncSMTPServer(store)
        serving = asyncio.create_task(server.serve_forever())
        while True:
            try:
                address = server.address
                break
            except RuntimeError:
                await asyncio.sleep(0.01)
        idle_reader, idle_writer = await raw_session(address, b"EHLO idle.example\r\n")
        client = AsyncSMTPClient(*address, options=options(tls=TLSMode.NEVER))
        await client.connect()
        sending = asyncio.create_task(client.send_message(MESSAGE, SENDER, [RCPT]))
        await entered.wait()
        stopping = asyncio.create_task(server.shutdown())
        idle_reply = await read_reply(idle_reader)  # the idle session is told at once
        release.set()
        result = await sending  # the message in hand completes
        with pytest.raises(errors.SMTPError) as after:
            await client.send_message(MESSAGE, SENDER, [RCPT])
        await client.quit()
        await stopping
        await serving  # serve_forever returns after shutdown
        await close_raw(idle_writer)
        return result, idle_reply, after.value

    result, idle_reply, after = run(main)
    assert result.accepted == (RCPT,)
    assert idle_reply.startswith(b"421 4.3.2")
    assert after.temporary
    assert [m.content for m in store.messages] == [MESSAGE]


def test_listening_socket_given_by_the_caller() -> None:
    store = Store()
    listener = socket.create_server(("127.0.0.1", 0))

    async def main() -> None:
        async with AsyncSMTPServer(store, sock=listener) as server:
            assert server.address == listener.getsockname()
            await send(server.address, tls=TLSMode.NEVER)

    run(main)
    assert len(store.messages) == 1 and listener.fileno() == -1


# -- accepting connections -------------------------------------------------------------


def test_selector_loop_accepts_without_asyncio_server_tasks() -> None:
    # On the standard library's loop a cleartext server takes connections
    # itself (no task per connection); TLS from the first byte keeps
    # asyncio's accept path, whose handshake it needs.
    async def main() -> tuple[int, int, Any]:
        async with AsyncSMTPServer() as plain, AsyncSMTPServer(
            ssl_context=certs.server_context(), implicit_tls=True
        ) as tls:
            counts = len(plain._acceptors), len(tls._acceptors)
            before = len(asyncio.all_tasks())
            await send(plain.address, tls=TLSMode.NEVER)
            assert len(asyncio.all_tasks()) == before
            return (*counts, plain.address)

    direct, via_asyncio, address = run(main)
    assert (direct, via_asyncio) == (1, 0)
    # The acceptor's duplicate of the listening socket is closed too: the
    # port no longer takes connections.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()


def test_accept_pauses_while_out_of_file_descriptors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # accept() failing with EMFILE stops accepting for a while instead of
    # spinning on a listening socket that stays readable; the connection
    # waits in the backlog and is served once descriptors are free again.
    import resource

    import smtpproto.asyncio_socket as adapter

    monkeypatch.setattr(adapter, "_ACCEPT_PAUSE", 0.3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        async with AsyncSMTPServer() as server:
            client = socket.socket()
            client.setblocking(False)
            # The client took the lowest free descriptor, so none is free
            # below this limit: the server's accept() has no descriptor.
            resource.setrlimit(resource.RLIMIT_NOFILE, (client.fileno() + 1, hard))
            try:
                await loop.sock_connect(client, server.address)
                await asyncio.sleep(0.1)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            greeting = await loop.sock_recv(client, 1024)
            await loop.sock_sendall(client, b"QUIT\r\n")
            while await loop.sock_recv(client, 1024):
                pass
            client.close()
            return greeting

    with caplog.at_level(logging.ERROR, logger="smtpproto"):
        greeting = run(main)
    assert greeting.startswith(b"220 ")
    failures = [r.getMessage() for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(failures) == 1 and "Too many open files" in failures[0]


# -- against the other adapter and the standard library ---------------------------------


def test_asyncio_client_against_the_sync_server() -> None:
    store = Store()

    class SyncAuth(Handler):
        def auth(self, session: Session, request: object) -> object:
            return isinstance(request, CheckPassword) and request.password == "secret"

        def message(self, session: Session, envelope: Envelope) -> None:
            store.messages.append(envelope)
            store.tls.append(session.tls)

    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",))
    with ServerThread(SyncAuth(), config=config, ssl_context=certs.server_context()) as server:

        async def main() -> None:
            await send(
                server.address, tls=TLSMode.REQUIRED, ssl_context=certs.client_context(),
                username="user", password="secret",
            )

        run(main)
    assert [m.content for m in store.messages] == [MESSAGE] and store.tls == [True]


def test_sync_client_against_the_asyncio_server() -> None:
    store = Auth()
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN", "SCRAM-SHA-256"))

    def client(address: tuple[str, int]) -> None:
        opts = options(tls=TLSMode.REQUIRED, username="user", password="secret")
        with SMTPClient(*address, options=opts, ssl_context=certs.client_context()) as smtp:
            smtp.send_message(MESSAGE, SENDER, [RCPT])
            smtp.send_message(MESSAGE, SENDER, [RCPT])

    async def main() -> None:
        async with AsyncSMTPServer(store, config=config, ssl_context=certs.server_context()) as server:
            await asyncio.to_thread(client, server.address)

    run(main)
    assert len(store.messages) == 2 and store.identities == ["user", "user"]


def test_smtplib_with_starttls_and_login() -> None:
    store = Auth()
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",))

    def client(address: tuple[str, int]) -> dict[str, Any]:
        with smtplib.SMTP(*address, timeout=10) as smtp:
            smtp.starttls(context=certs.client_context())
            smtp.login("user", "secret")
            return smtp.sendmail(SENDER, [RCPT, "c@example.org"], MESSAGE)

    async def main() -> dict[str, Any]:
        async with AsyncSMTPServer(store, config=config, ssl_context=certs.server_context()) as server:
            return await asyncio.to_thread(client, ("localhost", server.address[1]))

    assert run(main) == {}
    assert store.tls == [True] and store.identities == ["user"]
    assert store.messages[0].recipient_addresses == [RCPT, "c@example.org"]


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

    raw = socket.create_connection(address, timeout=15.0)
    context = certs.client_context()
    try:
        if not implicit:
            assert reply(raw).startswith(b"220 ")
            raw.sendall(b"EHLO strict.example\r\n")
            assert b"STARTTLS" in reply(raw)
            raw.sendall(b"STARTTLS\r\n")
            assert reply(raw).startswith(b"220 ")
        with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as sock:
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
    async def main() -> tuple[bytes, bytes]:
        async with AsyncSMTPServer(Store(), ssl_context=certs.server_context(), implicit_tls=implicit) as server:
            return await asyncio.to_thread(strict_tls_quit, server.address, implicit)

    quit_reply, after = run(main)
    assert quit_reply.startswith(b"221 ") and after == b""


def test_asyncio_client_ends_tls_with_close_notify() -> None:
    # The client side of RFC 8446 §6.1: a blocking TLS server that reads
    # with suppress_ragged_eofs=False sees QUIT, then a clean end of file.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(15.0)
    seen: list[bytes] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(15.0)
            conn.sendall(b"220 strict.example\r\n")
            conn.recv(4096)  # EHLO
            conn.sendall(b"250-strict.example\r\n250 STARTTLS\r\n")
            conn.recv(4096)  # STARTTLS
            conn.sendall(b"220 go ahead\r\n")
            with certs.server_context().wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
                tls.recv(4096)  # EHLO
                tls.sendall(b"250 strict.example\r\n")
                seen.append(tls.recv(4096))  # QUIT
                tls.sendall(b"221 bye\r\n")
                seen.append(tls.recv(4096))  # b"" only after close_notify

    async def main() -> None:
        server = asyncio.create_task(asyncio.to_thread(serve_one))
        host, port = listener.getsockname()[:2]
        client = AsyncSMTPClient(host, port, options=options(tls=TLSMode.REQUIRED), ssl_context=certs.client_context())
        await client.connect()
        await client.quit()
        await server

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
    line = b"EHLO trickle.example\r\n"

    async def main() -> tuple[int, bytes, bytes]:
        async with AsyncSMTPServer(Store(), timeouts=ServerTimeouts(command=0.5)) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            assert (await read_reply(reader)).startswith(b"220 ")
            answer = b""
            sent = 0
            for octet in line:
                writer.write(bytes([octet]))
                sent += 1
                try:
                    answer = await asyncio.wait_for(read_reply(reader), 0.2)
                except TimeoutError:
                    continue
                break
            after = await reader.read()
            await close_raw(writer)
            return sent, answer, after

    sent, answer, after = run(main)
    assert sent < len(line) and answer.startswith(b"421 4.4.2 ") and after == b""
