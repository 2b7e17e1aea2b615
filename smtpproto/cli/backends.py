"""Run one server on a listening socket until SIGTERM or SIGINT, on the
chosen adapter: ``asyncio`` (the default), ``uvloop`` (the asyncio adapter
on uvloop's event loop, an optional extra), ``trio`` or ``sync`` (a thread
per connection).

Each runner starts the server on the socket it is given, calls ``ready``
once connections are being accepted, waits for SIGTERM or SIGINT, then
shuts the server down: open sessions get 421, a message whose end of data
was answered is already stored, and the runner returns.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .._server_config import ServerConfig
from ..flows import Handler

__all__ = ["BACKENDS", "ServerSpec", "run_server", "backend_available"]

#: The adapters ``serve --backend`` can use.
BACKENDS = ("asyncio", "uvloop", "trio", "sync")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, kw_only=True)
class ServerSpec:
    """What every adapter's server is built from."""

    handler: Handler
    config: ServerConfig
    ssl_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    max_connections: int = 100
    #: Seconds open sessions get to finish after the signal.
    grace: float = 30.0


def backend_available(name: str) -> str | None:
    """None when the adapter *name* can run here, else why not."""
    if name == "trio":
        try:
            import trio  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
        except ImportError:
            return "the trio backend needs trio (pip install 'smtpproto[trio]')"
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "the uvloop backend needs uvloop (pip install 'smtpproto[uvloop]')"
    return None


def run_server(backend: str, spec: ServerSpec, sock: socket.socket, ready: Callable[[], None]) -> None:
    """Serve on *sock* with *backend* until SIGTERM or SIGINT."""
    if backend == "asyncio":
        asyncio.run(_asyncio_main(spec, sock, ready))
    elif backend == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_asyncio_main(spec, sock, ready))
    elif backend == "trio":
        import trio  # type: ignore[import-untyped, unused-ignore]

        trio.run(_trio_main, spec, sock, ready)
    elif backend == "sync":
        _sync_main(spec, sock, ready)
    else:
        raise ValueError(f"unknown backend {backend!r}")


async def _asyncio_main(spec: ServerSpec, sock: socket.socket, ready: Callable[[], None]) -> None:
    from ..asyncio import AsyncSMTPServer

    server = AsyncSMTPServer(
        spec.handler, config=spec.config, ssl_context=spec.ssl_context,
        implicit_tls=spec.implicit_tls, max_connections=spec.max_connections, sock=sock,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in _SIGNALS:
        loop.add_signal_handler(number, stop.set)
    await server.start()
    ready()
    await stop.wait()
    await server.shutdown(spec.grace)


async def _trio_main(spec: ServerSpec, sock: socket.socket, ready: Callable[[], None]) -> None:
    import trio  # type: ignore[import-untyped, unused-ignore]

    from ..trio import TrioSMTPServer

    server = TrioSMTPServer(
        spec.handler, config=spec.config, ssl_context=spec.ssl_context,
        implicit_tls=spec.implicit_tls, max_connections=spec.max_connections, sock=sock,
    )
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            ready()
            async for _ in signals:
                break
            server.shutdown(spec.grace)


def _sync_main(spec: ServerSpec, sock: socket.socket, ready: Callable[[], None]) -> None:
    from ..sync import SMTPServer

    server = SMTPServer(
        spec.handler, config=spec.config, ssl_context=spec.ssl_context,
        implicit_tls=spec.implicit_tls, max_connections=spec.max_connections, sock=sock,
    )
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in _SIGNALS}
    thread = threading.Thread(target=server.serve_forever, name="smtpproto-accept", daemon=True)
    try:
        thread.start()
        ready()
        while not stop.wait(1.0) and thread.is_alive():
            pass
        server.shutdown(spec.grace)
        thread.join(spec.grace)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
