"""Blocking sockets: a client, a threaded server, and a test helper.

The adapter is a loop that performs the actions of a flow
(:mod:`smtpproto.flows`) on a socket: send, receive with a timeout, wrap in
TLS, call the handler, close.  There is no protocol logic here.

``examples/send_sync.py``, ``examples/custom_handler_server.py`` and
``examples/lmtp_delivery_agent.py`` show it at work (the tests run them).
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from email.message import Message
from types import TracebackType
from typing import Any, TypeVar

from ._server_config import ServerConfig
from .flows.server import adapter_config
from .flows import (
    Call,
    ClientOptions,
    ClientSession,
    Close,
    Flow,
    Handler,
    Receive,
    Send,
    SendResult,
    ServerSession,
    ServerTimeouts,
    Shutdown,
    StartTLS,
    TLSMode,
    errors,
    prepare,
)
from .flows.message import DsnOptions, Outgoing

__all__ = ["SMTPClient", "SMTPServer", "ServerThread", "default_helo_name"]

log = logging.getLogger("smtpproto")
T = TypeVar("T")
# How often a blocked read looks at the server's shutdown flag.
_POLL = 0.2
# Longest wait for the TLS goodbye when closing (close_notify sent, the
# peer's awaited): the peer may be gone or may never answer.
_CLOSE_NOTIFY_WAIT = 1.0
# accept() failures that concern one connection or a passing shortage.
_TRANSIENT_ACCEPT_ERRORS = {
    errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO,
}


def default_helo_name() -> str:
    """This host's name, as the standard library knows it without DNS."""
    name = socket.gethostname()
    return name if name and all(c.isalnum() or c in "-." for c in name) else "localhost"


class _Transport:
    """A socket and the code that performs flow actions on it."""

    def __init__(
        self,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None,
        *,
        server_side: bool = False,
        stopping: threading.Event | None = None,
        handler: Handler | None = None,
    ) -> None:
        self.sock = sock
        self.ssl_context = ssl_context
        self.server_side = server_side
        self.stopping = stopping
        self.handler = handler
        #: time.monotonic() after which reads fail (a server's session cap).
        self.deadline: float | None = None
        # The deadline of the command being read: set by a Receive, kept by
        # the continued ones (RFC 5321 §4.5.3.2: a timeout per command).
        self._read_deadline: float | None = None

    def run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            try:
                # The two actions of every message first, without a call.
                if isinstance(action, Send):
                    self._timeout(action.timeout)
                    self.sock.sendall(action.data)
                elif isinstance(action, Receive) and self.stopping is None and self.deadline is None:
                    self._timeout(action.timeout)
                    value = self.sock.recv(action.size)
                else:
                    value = self._do(action)
            except Exception as exc:  # noqa: BLE001 - the flow decides
                error = exc

    def _timeout(self, timeout: float | None) -> None:
        """Set the socket's timeout, skipping the system call that setting
        it costs when it is already that."""
        if self.sock.gettimeout() != timeout:
            self.sock.settimeout(timeout)

    def _do(self, action: object) -> Any:
        """Perform an action other than a Send (``run`` does those)."""
        if isinstance(action, Receive):
            return self._receive(action)
        elif isinstance(action, Call):
            assert self.handler is not None
            result = getattr(self.handler, action.hook)(*action.args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"the {action.hook} hook is a coroutine: use the asyncio or trio adapter"
                )
            return result
        elif isinstance(action, StartTLS):
            # A client without a context never starts TLS (TLSMode.NEVER);
            # a server without one offers no STARTTLS (checked when made).
            assert self.ssl_context is not None
            self.sock.settimeout(30.0)
            self.sock = self.ssl_context.wrap_socket(
                self.sock, server_side=self.server_side, server_hostname=action.server_hostname
            )
        else:
            assert isinstance(action, Close), action
            self.close()
        return None

    def _receive(self, action: Receive) -> bytes:
        now = time.monotonic()
        if not action.continued:
            self._read_deadline = None if action.timeout is None else now + action.timeout
        deadline = self._read_deadline
        if self.deadline is not None:
            # The whole session is capped too (ServerSession gets TimeoutError).
            deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        timeout = None if deadline is None else deadline - now
        if timeout is not None and timeout <= 0:
            raise TimeoutError("command time is up")
        if self.stopping is None or timeout is None:
            self._timeout(timeout)
            return self.sock.recv(action.size)
        # A server read wakes up now and then to notice a shutdown.
        left = timeout
        while True:
            if self.stopping.is_set():
                raise Shutdown()
            self._timeout(min(_POLL, left))
            try:
                return self.sock.recv(action.size)
            except TimeoutError:
                left -= _POLL
                if left <= 0:
                    raise

    def close(self) -> None:
        """Close the socket; a TLS one says goodbye first.

        RFC 8446 §6.1: "Each party MUST send a "close_notify" alert before
        closing its write side of the connection".  ``unwrap()`` sends it and
        waits for the peer's, for at most ``_CLOSE_NOTIFY_WAIT`` seconds; a
        peer that is gone, hangs up, or answers with data only shortens it.
        """
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.fileno() != -1:
            try:
                sock.settimeout(_CLOSE_NOTIFY_WAIT)
                sock.unwrap()
            except (OSError, ValueError):
                pass  # best effort: the socket is closed below all the same
        sock.close()


class SMTPClient:
    """A blocking SMTP (or LMTP) client for one connection.

    ``connect()`` opens the session (greeting, EHLO, STARTTLS, AUTH) and
    leaves nothing open when it fails, ``send_message()`` sends one message
    and may be called again, and ``quit()`` ends it; as a context manager
    it connects and quits.  Give
    *unix_path* to connect to a Unix-domain socket (LMTP often listens on
    one).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 25,
        *,
        options: ClientOptions | None = None,
        ssl_context: ssl.SSLContext | None = None,
        unix_path: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.unix_path = unix_path
        if options is None:
            options = ClientOptions(helo_name=default_helo_name(), server_hostname=host)
        elif options.server_hostname is None:
            # The certificate is checked against the host connected to.
            options = replace(options, server_hostname=host)
        self.options = options
        needs_tls = options.tls is not TLSMode.NEVER
        self.ssl_context = ssl_context or (ssl.create_default_context() if needs_tls else None)
        self.session = ClientSession(options)
        self._transport: _Transport | None = None

    def connect(self) -> None:
        """Connect and open the session."""
        timeout = self.options.timeouts.connect
        try:
            sock = self._connect_socket(timeout)
        except TimeoutError:
            raise errors.Timeout(f"could not connect to {self.host}:{self.port}", step="connect") from None
        except ssl.SSLError as exc:
            raise errors.ProtocolFailure(f"TLS handshake failed: {exc}", step="connect") from None
        except OSError as exc:
            raise errors.Disconnected(f"could not connect to {self.host}:{self.port}: {exc}", step="connect") from None
        self._transport = _Transport(sock, self.ssl_context)
        try:
            self._run(self.session.open())
        except BaseException:
            # The flow ended the session; nothing of it may stay open.
            self._transport.close()
            self._transport = None
            raise

    def _connect_socket(self, timeout: float) -> socket.socket:
        """A connected socket (TLS for implicit TLS); none is left open on failure."""
        if self.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.unix_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.options.tls is not TLSMode.IMPLICIT:
            return sock
        assert self.ssl_context is not None
        try:
            return self.ssl_context.wrap_socket(sock, server_hostname=self.options.server_hostname)
        except BaseException:
            sock.close()
            raise

    def _run(self, flow: Flow[T]) -> T:
        if self._transport is None:
            raise RuntimeError("connect() first")
        try:
            return self._transport.run(flow)
        except errors.SMTPError:
            if self.session.conn.state.name in ("CLOSED", "ERROR"):
                self._transport.close()
            raise

    def send_message(
        self,
        message: Message | bytes | Iterable[bytes],
        sender: str | None = None,
        recipients: Iterable[str] | None = None,
        *,
        size: int | None = None,
        eight_bit: bool | None = None,
        smtputf8: bool | None = None,
        requiretls: bool = False,
        dsn: DsnOptions | None = None,
    ) -> SendResult:
        """Send one message; see :func:`smtpproto.flows.prepare` for the
        forms *message* may take.  Raises :class:`smtpproto.flows.errors.SMTPError`."""
        outgoing = prepare(
            message, sender, recipients, size=size, eight_bit=eight_bit,
            smtputf8=smtputf8, requiretls=requiretls, dsn=dsn,
        )
        return self._run(self.session.send(outgoing))

    def send_messages(self, messages: Iterable[Outgoing]) -> list[SendResult | errors.SMTPError]:
        """Send *messages* over this connection, pipelined across messages
        when the server offers PIPELINING (one round trip per message); each
        is an :class:`~smtpproto.flows.Outgoing`, as
        :func:`smtpproto.flows.prepare` makes it.

        Returns one outcome per message, in order: its
        :class:`~smtpproto.flows.SendResult`, or the
        :class:`~smtpproto.flows.errors.SMTPError` that refused it or ended
        the session; nothing is raised for a single message.  See
        :meth:`smtpproto.flows.ClientSession.send_many`."""
        return self._run(self.session.send_many(messages))

    def quit(self) -> None:
        """Say QUIT and close the connection."""
        if self._transport is not None:
            try:
                self._transport.run(self.session.quit())
            finally:
                self._transport.close()
                self._transport = None

    def __enter__(self) -> SMTPClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()


class SMTPServer:
    """A blocking SMTP server: one thread per connection.

    *ssl_context* (a server context with a certificate) enables STARTTLS,
    or TLS from the first byte with ``implicit_tls=True``.  At most
    *max_connections* sessions run at once; others are answered 421.
    *session_timeout* caps a whole session (421 when it runs out).  *sock*
    is a listening socket to use instead of binding one (the CLI passes
    ``SO_REUSEPORT`` sockets for its workers).
    :meth:`shutdown` gives open sessions 421 and waits for them, so a
    message whose end of data was answered is never lost.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: ServerConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        max_connections: int = 100,
        timeouts: ServerTimeouts | None = None,
        trusted: Callable[[Any], bool] | None = None,
        sock: socket.socket | None = None,
        unix_path: str | None = None,
        session_timeout: float | None = None,
    ) -> None:
        self.handler = handler if handler is not None else Handler()
        self.config = adapter_config(config, ssl_context is not None, implicit_tls)
        self.ssl_context = ssl_context
        self.implicit_tls = implicit_tls
        self.timeouts = timeouts
        self.trusted = trusted
        self.max_connections = max_connections
        self.session_timeout = session_timeout
        self._unix_path: str | None = None
        if sock is not None:
            self.listener = sock
        elif unix_path is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(unix_path)
            self.listener.listen(128)
            self._unix_path = unix_path  # ours to remove at shutdown
        else:
            self.listener = socket.create_server((host, port), backlog=128)
        self._stopping = threading.Event()
        self._serving = threading.Lock()  # held while serve_forever runs
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> Any:
        """The address the server listens on (host and the real port)."""
        return self.listener.getsockname()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        with self._serving:
            if not self._stopping.is_set():
                self._accept_loop()

    def _accept_loop(self) -> None:
        self.listener.settimeout(_POLL)
        while not self._stopping.is_set():
            try:
                sock, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                # This connection is lost, the server is not; pause so that a
                # full descriptor table can drain.
                log.warning("smtpproto: accept failed: %s", exc)
                self._stopping.wait(_POLL)
                continue
            with self._lock:
                busy = len(self._threads) >= self.max_connections
                if not busy:
                    thread = threading.Thread(target=self._serve, args=(sock, peer), daemon=True)
                    self._threads.add(thread)
            if busy:
                self._refuse(sock)
                continue
            thread.start()

    def _refuse(self, sock: socket.socket) -> None:
        try:
            if not self.implicit_tls:  # a cleartext line means nothing to a TLS client
                sock.settimeout(1.0)
                sock.sendall(b"421 4.3.2 Too many connections, try again later\r\n")
        except OSError:
            pass
        sock.close()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        transport = _Transport(
            sock, self.ssl_context, server_side=True, stopping=self._stopping, handler=self.handler
        )
        try:
            if self.implicit_tls:
                assert self.ssl_context is not None
                sock.settimeout(30.0)
                transport.sock = self.ssl_context.wrap_socket(sock, server_side=True)
            if self.session_timeout is not None:
                transport.deadline = time.monotonic() + self.session_timeout
            trusted = bool(self.trusted and self.trusted(peer))
            session = ServerSession(
                self.handler, self.config, peer=peer, tls=self.implicit_tls,
                trusted=trusted, timeouts=self.timeouts,
            )
            transport.run(session.run())
        except OSError as exc:
            log.debug("smtpproto: session with %s ended: %s", peer, exc)
        except Exception:  # noqa: BLE001 - one session's failure must not kill the server
            log.exception("smtpproto: session with %s failed", peer)
        finally:
            transport.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, give open sessions 421, and wait for them."""
        self._stopping.set()
        # Wait for serve_forever (if it runs) to stop accepting, so no
        # session starts after the ones joined below (it polls the flag).
        with self._serving:
            pass
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        self.listener.close()
        if self._unix_path is not None:
            try:
                os.unlink(self._unix_path)
            except FileNotFoundError:
                pass


class ServerThread:
    """Run an :class:`SMTPServer` in a background thread, for tests.

    Use it as a context manager: entering starts the server, ``address``
    gives ``(host, port)`` to connect to, and leaving shuts it down (open
    sessions get 421, accepted messages are kept).  The keyword arguments
    are those of :class:`SMTPServer`.
    """

    def __init__(self, handler: Handler | None = None, **kwargs: Any) -> None:
        self.server = SMTPServer(handler, **kwargs)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> Any:
        """``(host, port)`` of a TCP listener; the path of a Unix one."""
        address = self.server.address
        if isinstance(address, tuple):
            return address[:2]
        return address

    def __enter__(self) -> ServerThread:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self._thread.join(10)
