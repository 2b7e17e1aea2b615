# Theory of operation
# -------------------
# The flows are written once, as generators, and run by three adapters
# (blocking sockets, asyncio, trio).  A flow *yields* an action saying what
# I/O it needs and is resumed with the outcome:
#
#     Send(data)            write all of data          -> resumed with None
#     Receive(timeout)      read some bytes (b"": EOF)  -> resumed with bytes
#                           (continued=True: keep the previous deadline)
#     StartTLS(hostname)    wrap the transport in TLS   -> resumed with None
#     Call(hook, args)      call the application        -> resumed with its result
#                           (awaited when it returns an awaitable)
#     Close()               close the transport         -> resumed with None
#
# Failures of the transport are thrown into the generator: ``TimeoutError``
# for an expired ``timeout``, ``ConnectionError`` (or any ``OSError``) for a
# broken connection, ``ssl.SSLError`` from the handshake.  ``Shutdown`` is
# thrown by a server adapter that is stopping.  A flow never sleeps, reads
# a clock or touches a socket; timeouts are numbers it hands to the adapter.
#
# ``run_sync`` is the whole of a blocking driver for tests and simple
# embeddings: a dictionary of callables, one per action type.
from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

__all__ = [
    "Send",
    "Receive",
    "StartTLS",
    "Call",
    "Close",
    "Action",
    "Flow",
    "Shutdown",
    "run_sync",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Write all of ``data`` to the peer (within ``timeout`` seconds)."""

    data: bytes
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Receive:
    """Read whatever arrives (at most ``size`` octets) within ``timeout``
    seconds; resume with the bytes, ``b""`` at end of file.

    ``continued=True`` says this read finishes what the previous Receive
    began (the rest of a command line): it keeps the deadline of the last
    Receive without the flag (``timeout`` seconds after that one started)
    instead of getting a fresh one, so a per-command timeout bounds the
    whole command (RFC 5321 §4.5.3.2.7).  An adapter that ignores the flag
    gives each read its own ``timeout``, which is never shorter."""

    timeout: float | None = None
    size: int = 65536
    continued: bool = False


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Wrap the transport in TLS now (client: verify ``server_hostname``)."""

    server_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``hook`` on the application with ``args``; resume with what it
    returned (awaited first when it is awaitable).  An exception it raises
    is thrown into the flow."""

    hook: str
    args: tuple[Any, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Close:
    """Close the transport."""


Action: TypeAlias = Send | Receive | StartTLS | Call | Close
T = TypeVar("T")
#: A flow: a generator of actions that returns its result.
Flow: TypeAlias = Generator[Action, Any, T]


class Shutdown(Exception):
    """Thrown into a server flow by an adapter that is shutting down; the
    flow answers 421 and closes (RFC 5321 §3.8)."""


def run_sync(flow: Flow[T], handlers: dict[type[Any], Callable[[Any], Any]]) -> T:
    """Run *flow* to its end, doing each action with ``handlers[type(action)]``.

    An exception raised by a handler is thrown into the flow, which may
    handle it; the flow's own exceptions propagate.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        error = None
        try:
            value = handlers[type(action)](action)
        except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
            value, error = None, exc
