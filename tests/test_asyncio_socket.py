"""The asyncio server's own socket path (smtpproto/asyncio_socket.py): the
transport against a recording protocol over a real socket pair, then the
server on top of it under back-pressure and STARTTLS."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import certs
import pytest

from smtpproto.asyncio import AsyncSMTPClient, AsyncSMTPServer
from smtpproto.asyncio_socket import _HIGH_WATER, _SocketTransport
from smtpproto.flows import ClientOptions, Envelope, Handler, ServerTimeouts, Session, TLSMode

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]], limit: float = 20.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await main()

    return asyncio.run(bounded())


class Recorder:
    """Stands in for the stream: records what the transport tells it."""

    def __init__(self, keep_open: bool = True, fail: bool = False) -> None:
        self.view = memoryview(bytearray(4096))
        self.data = bytearray()
        self.calls: list[str] = []
        self.lost: list[Exception | None] = []
        self.keep_open = keep_open
        self.fail = fail
        self.transport: Any = None
        self.changed = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        if self.fail:
            raise RuntimeError("the protocol failed to start")
        self.transport = transport
        self.calls.append("made")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, count: int) -> None:
        self.data += self.view[:count]
        self.changed.set()

    def eof_received(self) -> bool:
        self.calls.append("eof")
        self.changed.set()
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")
        self.lost.append(exc)
        self.changed.set()

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")
        self.changed.set()

    async def until(self, check: Callable[[], bool]) -> None:
        while not check():
            self.changed.clear()
            await self.changed.wait()


def pair(recorder: Recorder) -> tuple[_SocketTransport, socket.socket]:
    """A started transport on one end of a TCP connection, the other end
    (blocking off) for the test to play the peer."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    ours, address = listener.accept()
    listener.close()
    ours.setblocking(False)
    peer.setblocking(False)
    transport = _SocketTransport(asyncio.get_running_loop(), ours, address, recorder)  # type: ignore[arg-type]
    transport.start()
    return transport, peer


async def read_all(peer: socket.socket) -> bytes:
    """What the peer receives until the end of the connection."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    while chunk := await loop.sock_recv(peer, 65536):
        received += chunk
    return bytes(received)


def test_reads_reach_the_stream_and_writes_the_peer() -> None:
    async def main() -> tuple[bytes, bytes, Any]:
        recorder = Recorder()
        transport, peer = pair(recorder)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"EHLO there\r\n")
        await recorder.until(lambda: recorder.data.endswith(b"\r\n"))
        transport.write(b"250 ok\r\n")
        reply = await loop.sock_recv(peer, 100)
        info = (
            transport.get_extra_info("peername") == peer.getsockname(),
            transport.get_extra_info("sockname") == peer.getpeername(),
            transport.get_extra_info("socket") is not None,
            transport.get_extra_info("sslcontext", "none"),
            transport.get_protocol() is cast(Any, recorder),
        )
        transport.close()
        await recorder.until(lambda: bool(recorder.lost))
        peer.close()
        return bytes(recorder.data), reply, info

    data, reply, info = run(main)
    assert data == b"EHLO there\r\n" and reply == b"250 ok\r\n"
    assert info == (True, True, True, "none", True)


def test_writes_the_kernel_refuses_wait_and_pause_the_stream() -> None:
    # The peer reads nothing: what the kernel does not take is kept, the
    # stream is told to pause above the high-water mark and to resume once
    # the peer has read, and every octet arrives in order.
    async def main() -> tuple[list[str], bytes, bytes, int]:
        recorder = Recorder()
        transport, peer = pair(recorder)
        chunk = bytes(range(256)) * 64
        sent = bytearray()
        while "pause" not in recorder.calls:
            transport.write(chunk)
            sent += chunk
            assert len(sent) < 64 * 1024 * 1024, "the transport never paused"
        buffered = transport.get_write_buffer_size()
        assert buffered > _HIGH_WATER
        transport.close()  # what is buffered still goes out first
        received = await read_all(peer)
        await recorder.until(lambda: bool(recorder.lost))
        peer.close()
        return recorder.calls, bytes(sent), received, transport.get_write_buffer_size()

    calls, sent, received, left = run(main)
    assert received == sent and left == 0
    assert calls == ["made", "pause", "resume", "lost"]


def test_abort_drops_what_waits_and_loses_the_connection_once() -> None:
    async def main() -> tuple[list[str], list[Exception | None], int, bool]:
        recorder = Recorder()
        transport, peer = pair(recorder)
        sent = 0
        while "pause" not in recorder.calls:
            transport.write(b"x" * 65536)
            sent += 65536
        transport.abort()
        transport.abort()
        transport.close()
        assert recorder.lost == []  # connection_lost comes later, not inline
        transport.write(b"more")  # ignored once lost
        received = len(await read_all(peer))
        await recorder.until(lambda: bool(recorder.lost))
        await asyncio.sleep(0.05)
        peer.close()
        return recorder.calls, recorder.lost, received < sent, transport.is_closing()

    calls, lost, short, closing = run(main)
    assert calls == ["made", "pause", "lost"] and lost == [None]
    assert short and closing


def test_end_of_input_keeps_the_transport_open_to_answer() -> None:
    async def main() -> tuple[list[str], bytes, bool]:
        recorder = Recorder(keep_open=True)
        transport, peer = pair(recorder)
        peer.shutdown(socket.SHUT_WR)
        await recorder.until(lambda: "eof" in recorder.calls)
        reading = transport.is_reading()
        transport.write(b"221 bye\r\n")
        transport.close()
        received = await read_all(peer)
        await recorder.until(lambda: bool(recorder.lost))
        peer.close()
        return recorder.calls, received, reading

    calls, received, reading = run(main)
    assert calls == ["made", "eof", "lost"] and received == b"221 bye\r\n" and not reading


def test_end_of_input_closes_when_the_stream_says_so() -> None:
    async def main() -> tuple[list[str], bytes]:
        recorder = Recorder(keep_open=False)
        transport, peer = pair(recorder)
        peer.shutdown(socket.SHUT_WR)
        received = await read_all(peer)
        await recorder.until(lambda: bool(recorder.lost))
        peer.close()
        return recorder.calls, received

    calls, received = run(main)
    assert calls == ["made", "eof", "lost"] and received == b""


def test_a_reset_by_the_peer_is_the_connection_lost_with_its_error() -> None:
    async def main() -> list[Exception | None]:
        recorder = Recorder()
        transport, peer = pair(recorder)
        # SO_LINGER with a zero timeout: close() sends a reset.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        await recorder.until(lambda: bool(recorder.lost))
        return recorder.lost

    lost = run(main)
    assert len(lost) == 1 and isinstance(lost[0], ConnectionResetError)


def test_paused_reading_delivers_nothing_until_resumed() -> None:
    async def main() -> tuple[bytes, bytes]:
        recorder = Recorder()
        transport, peer = pair(recorder)
        loop = asyncio.get_running_loop()
        transport.pause_reading()
        assert not transport.is_reading()
        await loop.sock_sendall(peer, b"held back\r\n")
        await asyncio.sleep(0.1)
        while_paused = bytes(recorder.data)
        transport.resume_reading()
        await recorder.until(lambda: bool(recorder.data))
        transport.close()
        await recorder.until(lambda: bool(recorder.lost))
        peer.close()
        return while_paused, bytes(recorder.data)

    assert run(main) == (b"", b"held back\r\n")


def test_hand_off_moves_the_socket_and_what_waits_to_an_asyncio_transport() -> None:
    async def main() -> tuple[bytes, list[str], bytes]:
        recorder = Recorder()
        transport, peer = pair(recorder)
        loop = asyncio.get_running_loop()
        sent = bytearray()
        while transport.get_write_buffer_size() == 0:
            transport.write(b"y" * 65536)
            sent += b"y" * 65536
        handed = transport.hand_off()
        assert transport.is_closing() and not transport.is_reading()
        transport.close()  # the old transport is done: no callback follows
        transport.abort()
        received = asyncio.Queue[bytes]()

        class Next(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                received.put_nowait(data)

        handed.set_protocol(Next())
        handed.write(b"after")
        got = bytearray()
        while not got.endswith(b"after"):
            got += await loop.sock_recv(peer, 1 << 20)
        await loop.sock_sendall(peer, b"to the new protocol")
        echoed = await received.get()
        handed.close()
        await asyncio.sleep(0.05)
        peer.close()
        with pytest.raises(ConnectionResetError):
            transport.hand_off()
        assert bytes(got) == bytes(sent) + b"after"
        return echoed, recorder.calls, bytes(recorder.data)

    echoed, calls, data = run(main)
    assert echoed == b"to the new protocol" and calls == ["made"] and data == b""


def test_a_stream_that_fails_to_start_costs_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> bytes:
        recorder = Recorder(fail=True)
        transport, peer = pair(recorder)
        received = await read_all(peer)
        peer.close()
        assert transport.is_closing()
        return received

    with caplog.at_level(logging.ERROR, logger="smtpproto"):
        assert run(main) == b""
    assert any("setting up the connection" in r.getMessage() for r in caplog.records)


# -- the server on it ------------------------------------------------------------------


def test_a_client_that_does_not_read_gets_every_reply_once_it_does() -> None:
    # 30,000 pipelined NOOPs from a client with a small receive buffer that
    # reads nothing until it has sent them all: the replies wait in the
    # transport (the session pausing above the high-water mark, reading
    # pausing behind it), and every one of them arrives, in order.
    count = 30_000

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        async with AsyncSMTPServer() as server:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            await loop.sock_connect(client, server.address)
            await loop.sock_sendall(client, b"EHLO c.example\r\n" + b"NOOP\r\n" * count + b"QUIT\r\n")
            received = await read_all(client)
            client.close()
            return received

    received = run(main, limit=60)
    lines = received.split(b"\r\n")
    assert lines[0].startswith(b"220 ") and lines[-2].startswith(b"221 ")
    assert sum(1 for line in lines if line.startswith(b"250 2.0.0")) == count


def test_starttls_hands_the_socket_to_asyncio_and_the_message_arrives() -> None:
    messages: list[tuple[bool, bytes | None]] = []
    transports: list[str] = []

    class Store(Handler):
        def ehlo(self, session: Session, name: str) -> None:
            for stream in server._sessions:
                transports.append(type(stream.transport).__name__)

        def message(self, session: Session, envelope: Envelope) -> None:
            messages.append((session.tls, envelope.content))

    server = AsyncSMTPServer(Store(), ssl_context=certs.server_context())

    async def main() -> None:
        async with server:
            options = ClientOptions(tls=TLSMode.REQUIRED, helo_name="c.example", server_hostname="localhost")
            async with AsyncSMTPClient(*server.address, options=options, ssl_context=certs.client_context()) as client:
                await client.send_message(b"Subject: t\r\n\r\nover TLS\r\n", "a@example.org", ["b@example.org"])

    run(main)
    assert messages == [(True, b"Subject: t\r\n\r\nover TLS\r\n")]
    # Before STARTTLS the session ran on the server's own transport, after
    # it on asyncio's TLS transport.
    assert transports[0] == "_SocketTransport" and transports[-1] != "_SocketTransport"


def test_accepted_connections_send_small_replies_at_once() -> None:
    # TCP_NODELAY on every accepted socket (inherited from the listening
    # socket on Linux, set on each elsewhere): a reply must not wait for
    # the acknowledgement of the one before it (Nagle's algorithm).
    flags: list[int] = []

    class Probe(Handler):
        def ehlo(self, session: Session, name: str) -> None:
            for stream in server._sessions:
                sock = stream.transport.get_extra_info("socket") if stream.transport else None
                flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) if sock else -1)

    server = AsyncSMTPServer(Probe())

    async def main() -> None:
        async with server:
            loop = asyncio.get_running_loop()
            client = socket.create_connection(server.address)
            client.setblocking(False)
            await loop.sock_recv(client, 1024)
            await loop.sock_sendall(client, b"EHLO c.example\r\nQUIT\r\n")
            await read_all(client)
            client.close()

    run(main)
    assert len(flags) == 1 and flags[0] != 0


# -- deadlines -------------------------------------------------------------------------


def test_idle_sessions_share_the_loop_timers_of_their_deadlines() -> None:
    # Sessions waiting for a command with deadlines in the same tick of the
    # deadline wheel share one loop timer; a timeout comes at most a tick
    # late; once every session is gone no timer is left behind.
    from smtpproto.asyncio_stream import _TICKS, _wheel

    async def main() -> tuple[int, int, list[float], int]:
        loop = asyncio.get_running_loop()
        async with AsyncSMTPServer(timeouts=ServerTimeouts(command=1.0), max_connections=200) as server:
            clients = []
            for _ in range(40):
                client = socket.create_connection(server.address)
                client.setblocking(False)
                clients.append(client)
            for client in clients:
                assert (await loop.sock_recv(client, 1024)).startswith(b"220 ")
            started = loop.time()
            for client in clients:
                await loop.sock_sendall(client, b"NOOP\r\n")
            for client in clients:
                assert (await loop.sock_recv(client, 1024)).startswith(b"250 ")
            wheel = _wheel(loop)
            waiting = sum(len(streams) for streams in wheel._streams.values())
            timers = len(wheel._timers)
            # Each session times out: 421, then the close (§4.5.3.2).
            delays = []
            for client in clients:
                reply = await read_all(client)
                delays.append(loop.time() - started)
                assert reply.startswith(b"421 "), reply
                client.close()
            await asyncio.sleep(0.1)
            return waiting, timers, delays, len(wheel._timers) + len(wheel._streams)

    waiting, timers, delays, left = run(main)
    assert waiting == 40
    # The NOOPs were answered within a few ticks of each other.
    assert 1 <= timers <= 5
    # None before its deadline, the first within a tick (plus scheduling
    # slack on a loaded machine), and all of them.
    assert 1.0 - 1 / _TICKS <= min(delays) < 1.0 + 1 / _TICKS + 0.5
    assert max(delays) < 10.0
    assert left == 0
