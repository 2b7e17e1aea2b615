"""Load-test tools: a server under test in a process of its own, and a
lean raw client for the load generator.

Theory of operation
-------------------
The server under test (``smtpproto.asyncio.AsyncSMTPServer`` or
``smtpproto.trio.TrioSMTPServer``) runs in a subprocess started from this
very file, so that it has an interpreter (and a GIL) of its own: the load
generator cannot starve it, and its memory can be measured alone.  The
test talks to it over a pipe, one JSON object a line:

* the server writes ``{"address": [host, port]}`` once it listens;
* the test writes a request (``{"op": "stats"}``, ``"reset_peak"``,
  ``"deliveries"`` or ``{"op": "shutdown", "timeout": t}``) and reads one
  answer line; a thread of the server process reads the requests and runs
  each in the event loop's thread, where the handler lives;
* end of input (the test closes the pipe) shuts the server down, if that
  was not done yet, and the process exits.

The server's :class:`LoadHandler` counts sessions (the most held at once,
from the ``connect`` and ``disconnect`` hooks), keeps each delivered
message as its identifier (the first header, ``X-Load-Id``), SHA-256 and
size, and can be streaming: then it stages the chunks in the session and
commits them in ``message`` only, as the Handler's contract asks, so what
a cut session staged is dropped at ``disconnect`` and counted.  A message
whose headers say ``X-Load-Stuck: yes`` makes the ``message`` hook wait
for ever (only a forced cancel ends it).

The client side is plain asyncio streams (:class:`Conn`), with the
message builder and the DATA / BDAT framing (RFC 5321 §4.5.2 dot-stuffing,
RFC 3030 §2 chunks).  Every wait has a timeout, so nothing can hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import random
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

from smtpproto import Mail, ServerConfig
from smtpproto.flows import Envelope, Handler, ServerTimeouts, Session

__all__ = [
    "Conn",
    "LoadHandler",
    "ServerProcess",
    "bdat_section",
    "data_section",
    "make_message",
    "message_id",
    "raise_open_files",
    "sha256",
]

#: The first header of every test message: ``X-Load-Id: <tag>``.
ID_HEADER = b"X-Load-Id: "
#: A header that makes the server's ``message`` hook wait for ever.
STUCK_HEADER = b"X-Load-Stuck: yes\r\n"
# Seconds to wait for the server process to start, answer or end.
_PROCESS_WAIT = 60.0


def sha256(data: bytes) -> str:
    """The hex SHA-256 of *data*: equal digests mean byte-exact content."""
    return hashlib.sha256(data).hexdigest()


def message_id(content: bytes) -> str | None:
    """The tag of a test message (its first line is the ``X-Load-Id``
    header), or None."""
    first, _, _ = content.partition(b"\r\n")
    if not first.startswith(ID_HEADER):
        return None
    return first[len(ID_HEADER):].decode("ascii", "replace")


def _memory() -> dict[str, int]:
    """The process's resident set now and at its highest, in bytes
    (``/proc/self/status`` on Linux; the peak alone elsewhere)."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) * 1024
    except OSError:
        found["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss": found.get("VmRSS", 0), "rss_peak": found.get("VmHWM", 0)}


class LoadHandler(Handler):
    """The server's handler: counts sessions and keeps what it delivered
    (see the theory of operation)."""

    def __init__(
        self,
        sleep: Callable[[float], Coroutine[Any, Any, None]],
        *,
        streaming: bool = False,
        delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.streaming = streaming
        self._sleep = sleep
        self._delay = delay
        self._rng = random.Random(seed)
        self.connects = self.disconnects = self.open = self.peak_open = 0
        #: Messages cut short whose staged content was dropped.
        self.discarded = 0
        #: ``message`` hooks cancelled while stuck (a forced shutdown).
        self.cancelled = 0
        #: One record per delivered message.
        self.deliveries: list[dict[str, Any]] = []

    def connect(self, session: Session) -> None:
        """Count the session."""
        self.connects += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)

    def _drop(self, session: Session) -> None:
        if session.data.pop("staged", None):
            self.discarded += 1

    def mail(self, session: Session, mail: Mail) -> None:
        """A new transaction: nothing staged survives from an earlier one."""
        self._drop(session)

    def rset(self, session: Session) -> None:
        """The transaction was reset: drop what was staged."""
        self._drop(session)

    def message_data(self, session: Session, chunk: bytes) -> None:
        """Stage a chunk (streaming only); it counts once ``message`` commits it."""
        session.data.setdefault("staged", []).append(chunk)

    async def message(self, session: Session, envelope: Envelope) -> None:
        """Commit the message: record its identifier, digest and size."""
        if envelope.content is not None:
            content = envelope.content
        else:
            content = b"".join(session.data.pop("staged", []))
        if STUCK_HEADER in content[:200]:
            try:
                await self._sleep(3600.0)  # only a forced cancel ends this
            except BaseException:
                self.cancelled += 1
                raise
        if self._delay:
            await self._sleep(self._rng.uniform(0.0, self._delay))
        self.deliveries.append({
            "id": message_id(content),
            "sha256": sha256(content),
            "size": len(content),
            "sender": envelope.sender,
            "recipients": envelope.recipient_addresses,
        })

    def disconnect(self, session: Session) -> None:
        """Count the end of the session; drop what a cut message staged."""
        self._drop(session)
        self.disconnects += 1
        self.open -= 1

    def stats(self) -> dict[str, Any]:
        """Counters and the process's memory, for the ``stats`` request."""
        traced = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
        return {
            "connects": self.connects,
            "disconnects": self.disconnects,
            "open": self.open,
            "peak_open": self.peak_open,
            "delivered": len(self.deliveries),
            "discarded": self.discarded,
            "cancelled": self.cancelled,
            "cpu": time.process_time(),
            "traced": traced[0],
            "traced_peak": traced[1],
            **_memory(),
        }

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a request other than ``shutdown`` (in the loop's thread)."""
        op = request["op"]
        if op == "reset_peak":
            self.peak_open = self.open
            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()
        if op == "deliveries":
            return {"deliveries": self.deliveries}
        return self.stats()


# -- the server process ----------------------------------------------------------------


def _control(address: Any, call: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The server process's request loop (a thread): announce the address,
    answer each request line, and shut down at end of input."""
    print(json.dumps({"address": list(address)}), flush=True)
    for line in sys.stdin:
        print(json.dumps(call(json.loads(line))), flush=True)
    call({"op": "end"})


def _server_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """The server's arguments from the test's specification."""
    timeouts = spec.get("timeouts")
    config = dict(spec.get("config", {}))
    kwargs: dict[str, Any] = {
        "max_connections": spec.get("max_connections", 100),
        "timeouts": ServerTimeouts(**timeouts) if timeouts else None,
        "session_timeout": spec.get("session_timeout"),
    }
    if spec.get("starttls"):
        import certs  # this file's directory is the subprocess's sys.path[0]

        config["starttls"] = True
        kwargs["ssl_context"] = certs.server_context()
    return {**kwargs, "config": ServerConfig(**config)}


async def _serve_asyncio(spec: dict[str, Any]) -> None:
    from smtpproto.asyncio import AsyncSMTPServer

    handler = LoadHandler(asyncio.sleep, **spec.get("handler", {}))
    server = AsyncSMTPServer(handler, **_server_kwargs(spec))
    await server.start()
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    stopped = False

    async def perform(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal stopped
        if request["op"] in ("shutdown", "end"):
            if not stopped:
                stopped = True
                await server.shutdown(request.get("timeout", 10.0))
            if request["op"] == "end":
                finished.set()
        return handler.answer(request)

    def call(request: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(perform(request), loop).result()

    threading.Thread(target=_control, args=(server.address, call), daemon=True).start()
    await finished.wait()


async def _serve_trio(spec: dict[str, Any]) -> None:
    import trio  # type: ignore[import-untyped, unused-ignore]

    from smtpproto.trio import TrioSMTPServer

    handler = LoadHandler(trio.sleep, **spec.get("handler", {}))
    server = TrioSMTPServer(handler, **_server_kwargs(spec))
    token = trio.lowlevel.current_trio_token()
    finished, served = trio.Event(), trio.Event()

    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await server.serve(task_status=task_status)
        finally:
            served.set()

    async def perform(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] in ("shutdown", "end"):
            server.shutdown(request.get("timeout", 10.0))
            await served.wait()
            if request["op"] == "end":
                finished.set()
        return handler.answer(request)

    def call(request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = trio.from_thread.run(perform, request, trio_token=token)
        return result

    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve)
        threading.Thread(target=_control, args=(address, call), daemon=True).start()
        await finished.wait()


def _server_main(spec: dict[str, Any]) -> None:
    # The adapters log failures with logging.exception / logging.error:
    # the level name in each line lets the test spot them.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if spec.get("tracemalloc"):
        tracemalloc.start()
    if spec["backend"] == "asyncio":
        asyncio.run(_serve_asyncio(spec))
    else:
        import trio  # type: ignore[import-untyped, unused-ignore]

        trio.run(_serve_trio, spec)




class ServerProcess:
    """A server under test in a subprocess (see the theory of operation).

    *backend* is ``"asyncio"`` or ``"trio"``; *config* holds
    :class:`~smtpproto.ServerConfig` fields, *timeouts* the
    :class:`~smtpproto.flows.ServerTimeouts` ones, *handler* the
    :class:`LoadHandler` options; *starttls* gives the server the test
    certificate (``certs.server_context()``), so it offers STARTTLS.  Use
    it with ``with``; :attr:`address` is the listening ``(host, port)``.
    *log_path* receives the server's standard error (its log).
    """

    def __init__(
        self,
        backend: str,
        log_path: Path,
        *,
        config: dict[str, Any] | None = None,
        timeouts: dict[str, float] | None = None,
        handler: dict[str, Any] | None = None,
        max_connections: int = 100,
        session_timeout: float | None = None,
        trace_memory: bool = False,
        starttls: bool = False,
    ) -> None:
        self.spec = {
            "backend": backend,
            "config": config or {},
            "timeouts": timeouts,
            "handler": handler or {},
            "max_connections": max_connections,
            "session_timeout": session_timeout,
            "tracemalloc": trace_memory,
            "starttls": starttls,
        }
        self.log_path = log_path
        self.address: tuple[str, int] = ("", 0)
        self._lines: queue.Queue[str] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> ServerProcess:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        with open(self.log_path, "w", encoding="utf-8") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), json.dumps(self.spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True, env=env, cwd=root,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            host, port = self._next()["address"]
        except BaseException:
            self._stop()
            raise
        self.address = (host, port)
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _next(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=_PROCESS_WAIT)
        except queue.Empty:
            raise AssertionError(f"the server process did not answer; its log:\n{self.log()}") from None
        if not line:
            raise AssertionError(f"the server process ended; its log:\n{self.log()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Send a request to the server process and return its answer."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self._process.stdin.flush()
        return self._next()

    def stats(self) -> dict[str, Any]:
        """The handler's counters and the process's memory."""
        return self.request("stats")

    def deliveries(self) -> list[dict[str, Any]]:
        """Every message the handler committed."""
        found: list[dict[str, Any]] = self.request("deliveries")["deliveries"]
        return found

    def log(self) -> str:
        """What the server process wrote to its standard error so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _stop(self) -> int | None:
        process = self._process
        if process is None:
            return None
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            code: int | None = process.wait(_PROCESS_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()  # our own child, by its handle
            process.wait(_PROCESS_WAIT)
            code = None
        if self._reader is not None:
            self._reader.join(_PROCESS_WAIT)  # it reads to the end of the output
        assert process.stdout is not None
        process.stdout.close()
        return code

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        code = self._stop()
        if kind is None:
            assert code == 0, f"the server process ended with {code}; its log:\n{self.log()}"


# -- the client side ---------------------------------------------------------------------


def raise_open_files(wanted: int) -> int:
    """Raise the soft limit of open files towards *wanted* (at most the
    hard limit); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


_TEXT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .-"


def make_message(tag: str, rng: random.Random, size: int, *, stuck: bool = False) -> bytes:
    """A test message of about *size* octets whose first header names
    *tag*; its body has lines that start with dots, an empty line and a
    line of one dot, so transparency (RFC 5321 §4.5.2) is exercised."""
    head = ID_HEADER + tag.encode("ascii") + b"\r\n" + (STUCK_HEADER if stuck else b"")
    head += b"Subject: load test " + tag.encode("ascii") + b"\r\n\r\n"
    # Lines are slices of one random text, drawn once per message.
    text = "".join(rng.choices(_TEXT_ALPHABET, k=256)).encode("ascii") * 2
    lines = [head]
    total = len(head)
    while total < size:
        choice = rng.random()
        if choice < 0.1:
            line = b"." * rng.randint(1, 3)
        elif choice < 0.15:
            line = b""
        else:
            start = rng.randrange(256)
            line = text[start : start + rng.randint(1, 76)]
            if choice > 0.9:
                line = b"." + line
        lines.append(line + b"\r\n")
        total += len(line) + 2
    return b"".join(lines)


def data_section(content: bytes) -> bytes:
    """*content* dot-stuffed and followed by the end of data, ready to
    write after a 354 (RFC 5321 §4.5.2; *content* ends with CRLF)."""
    assert content.endswith(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in content.split(b"\r\n"))
    return stuffed + b".\r\n"


def bdat_section(content: bytes, rng: random.Random) -> list[bytes]:
    """*content* as one to three BDAT commands with their chunks, the last
    one ``LAST`` (RFC 3030 §2); each item is a command and its octets."""
    cuts = sorted(rng.sample(range(1, len(content)), k=min(2, len(content) - 1)))[: rng.randint(0, 2)]
    bounds = [0, *cuts, len(content)]
    pieces = []
    for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
        last = b" LAST" if index == len(bounds) - 2 else b""
        pieces.append(b"BDAT %d%s\r\n" % (end - start, last) + content[start:end])
    return pieces


class _Received(asyncio.Protocol):
    """A client connection's bytes as they come; the end of the stream (a
    FIN or a reset) is noted after whatever arrived before it, so nothing
    received is lost to an error (asyncio's streams raise a reset before
    handing out the bytes they already hold)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False
        self.changed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.changed.set()

    def eof_received(self) -> bool:
        self.ended = True
        self.changed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.changed.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class Conn:
    """One raw client connection, every wait bounded."""

    def __init__(self, transport: asyncio.Transport, received: _Received) -> None:
        self.transport = transport
        self._received = received

    @classmethod
    async def open(cls, address: tuple[str, int], timeout: float = 30.0) -> Conn:
        """Connect to *address*."""
        loop = asyncio.get_running_loop()
        transport, received = await asyncio.wait_for(loop.create_connection(_Received, *address), timeout)
        return cls(transport, received)

    @property
    def ended(self) -> bool:
        """True once the server closed (or reset) the connection and every
        byte it sent has been read."""
        return self._received.ended and not self._received.buffer

    async def _line(self, timeout: float) -> bytes:
        received = self._received
        async with asyncio.timeout(timeout):
            while True:
                end = received.buffer.find(b"\n")
                if end >= 0:
                    line = bytes(received.buffer[: end + 1])
                    del received.buffer[: end + 1]
                    return line
                if received.ended:
                    line = bytes(received.buffer)
                    received.buffer.clear()
                    return line
                received.changed.clear()
                await received.changed.wait()

    async def reply(self, timeout: float = 30.0) -> bytes:
        """Read one whole reply (every line of a multiline one); what came
        of it (``b""`` if nothing) when the stream ends."""
        lines = b""
        while True:
            line = await self._line(timeout)
            lines += line
            if not line.endswith(b"\n") or line[3:4] != b"-":
                return lines

    async def rest(self, timeout: float = 30.0) -> bytes:
        """Everything the server still sends, up to its end of the stream."""
        data = b""
        while line := await self._line(timeout):
            data += line
        return data

    async def write(self, data: bytes, timeout: float = 30.0) -> None:
        """Write *data* and wait until the transport took it; a
        ``ConnectionResetError`` once the connection is gone."""
        if self._received.ended or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)
        await asyncio.wait_for(self._received.writable.wait(), timeout)

    def abort(self, reset: bool) -> None:
        """Close at once: with a TCP RST (SO_LINGER 0) when *reset*, else a
        FIN after what was written."""
        sock = self.transport.get_extra_info("socket")
        if reset and sock is not None and sock.fileno() >= 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()

    async def close(self, timeout: float = 10.0) -> None:
        """Close and wait until it is closed."""
        self.transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._received.ended:
                    self._received.changed.clear()
                    await self._received.changed.wait()


if __name__ == "__main__":
    _server_main(json.loads(sys.argv[1]))
