"""In-memory drivers and handlers for testing the flows (smtpproto.flows).

:class:`Link` runs one :class:`ServerSession` flow and, one after the
other, the flows of a :class:`ClientSession`, passing the bytes each side
sends to the other.  Nothing is simulated in the flows themselves: the
driver only performs their actions.  TLS is a no-op here (both sides are
told the handshake worked, or the client is told it failed); the real
thing is tested over loopback sockets with the blocking adapter.

The driver records every write of each side (``client_writes``,
``server_writes``), so a test can count how many writes a pipelined batch
took.  A client ``Receive`` that the server cannot satisfy (it waits for
input too) is answered with ``TimeoutError``, as an adapter would after
its timeout.

:class:`Script` is a fake server for replies the real server flow never
gives; :class:`Recorder` and :class:`AuthRecorder` are handlers that
record every hook call and answer as a test tells them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from smtpproto import ServerConfig, sasl
from smtpproto.flows import (
    Call,
    ClientOptions,
    ClientSession,
    Close,
    Flow,
    Handler,
    Receive,
    Send,
    ServerSession,
    ServerTimeouts,
    StartTLS,
)

T = TypeVar("T")


class Link:
    """A server flow and a client session wired together in memory."""

    def __init__(
        self,
        handler: Handler | None = None,
        config: ServerConfig | None = None,
        *,
        options: ClientOptions | None = None,
        server_tls: bool = False,
        trusted: bool = False,
        peer: Any = ("192.0.2.7", 40000),
        timeouts: ServerTimeouts | None = None,
        tls_error: BaseException | None = None,
    ) -> None:
        self.handler = handler if handler is not None else Handler()
        self.server = ServerSession(
            self.handler, config, peer=peer, tls=server_tls, trusted=trusted, timeouts=timeouts
        )
        self.client = ClientSession(options)
        self.tls_error = tls_error
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.client_writes: list[bytes] = []
        self.server_writes: list[bytes] = []
        self.client_closed = False
        self.server_closed = False
        self.server_done = False
        self.client_tls = False
        self.server_tls_started = False
        self.server_receive_timeouts: list[float | None] = []
        self._flow = self.server.run()
        self._pending: Any = None  # the Receive the server waits on
        self._resume(None, None)

    # -- the server side ---------------------------------------------------

    def _resume(self, value: Any, error: BaseException | None) -> None:
        while True:
            try:
                action = self._flow.throw(error) if error is not None else self._flow.send(value)
            except StopIteration:
                self.server_done = True
                self._pending = None
                return
            value, error = None, None
            if isinstance(action, Receive):
                self.server_receive_timeouts.append(action.timeout)
                if not self.to_server and not self.client_closed:
                    self._pending = action
                    return
                value = self._take(self.to_server, action.size)
            elif isinstance(action, Send):
                if self.client_closed:
                    error = BrokenPipeError("the client closed the connection")
                else:
                    self.server_writes.append(action.data)
                    self.to_client += action.data
            elif isinstance(action, Call):
                try:
                    value = getattr(self.handler, action.hook)(*action.args)
                except Exception as exc:  # noqa: BLE001 - handed to the flow
                    error = exc
            elif isinstance(action, StartTLS):
                self.server_tls_started = True
            else:
                assert isinstance(action, Close), action
                self.server_closed = True

    @staticmethod
    def _take(buffer: bytearray, size: int) -> bytes:
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def pump(self) -> None:
        """Let the server work on what it received."""
        if self._pending is not None and (self.to_server or self.client_closed):
            size = self._pending.size
            self._pending = None
            self._resume(self._take(self.to_server, size), None)

    def throw_into_server(self, error: BaseException) -> None:
        """Fail the read the server waits on with *error*."""
        assert self._pending is not None, "the server is not waiting for input"
        self._pending = None
        self._resume(None, error)

    # -- raw client bytes --------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send raw bytes to the server as a client would."""
        self.to_server += data
        self.pump()

    def read(self) -> bytes:
        """Everything the server sent and the test has not read yet."""
        return self._take(self.to_client, len(self.to_client))

    def close_client(self) -> None:
        """The client hangs up."""
        self.client_closed = True
        self.pump()

    # -- client flows --------------------------------------------------------

    def run(self, flow: Flow[T]) -> T:
        """Run one client flow against the server to its end."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, error = None, None
            if isinstance(action, Send):
                if self.server_closed:
                    error = BrokenPipeError("the server closed the connection")
                else:
                    self.client_writes.append(action.data)
                    self.to_server += action.data
            elif isinstance(action, Receive):
                self.pump()
                if self.to_client:
                    value = self._take(self.to_client, action.size)
                elif self.server_closed:
                    value = b""
                else:
                    error = TimeoutError("the server has nothing to say")
            elif isinstance(action, StartTLS):
                self.pump()
                if self.tls_error is not None:
                    error = self.tls_error
                else:
                    self.client_tls = True
            else:
                assert isinstance(action, Close), action
                self.close_client()

    def open(self) -> Any:
        return self.run(self.client.open())


class Script:
    """A fake server for what the real server flow would never do: each
    command line the client writes is answered with ``answer(line)``
    (``None``: hang up).  Message content after a 354 is swallowed up to
    its ``.`` line, which is answered too."""

    def __init__(
        self,
        answer: Callable[[bytes], bytes | None],
        greeting: bytes = b"220 fake.example ESMTP\r\n",
        *,
        tls_error: BaseException | None = None,
    ) -> None:
        self.answer = answer
        self.to_client = bytearray(greeting)
        self.lines: list[bytes] = []
        self.writes: list[bytes] = []
        self.hung_up = False
        self.closed = False
        self.tls_started = False
        self.tls_error = tls_error
        self._partial = b""
        self._in_data = False

    def _received(self, data: bytes) -> None:
        self._partial += data
        while b"\r\n" in self._partial and not self.hung_up:
            line, self._partial = self._partial.split(b"\r\n", 1)
            if self._in_data:
                if line != b".":
                    continue
                self._in_data = False
            else:
                self.lines.append(line)
            reply = self.answer(line)
            if reply is None:
                self.hung_up = True
                return
            self.to_client += reply
            if line.upper() == b"DATA" and reply.startswith(b"354"):
                self._in_data = True

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
            if isinstance(action, Send):
                if self.hung_up:
                    error = ConnectionResetError("the server hung up")
                else:
                    self.writes.append(action.data)
                    self._received(action.data)
            elif isinstance(action, Receive):
                if self.to_client:
                    value = bytes(self.to_client[: action.size])
                    del self.to_client[: action.size]
                elif self.hung_up:
                    value = b""
                else:
                    error = TimeoutError("the script has nothing to say")
            elif isinstance(action, StartTLS):
                self.tls_started = True
                error = self.tls_error
            else:
                assert isinstance(action, Close), action
                self.closed = True


class Recorder(Handler):
    """A handler that records every hook call (with what the session said
    at the time) and answers as told: ``answers[hook]`` is a reply, an
    exception to raise, or a callable ``(session, *args)`` giving either."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.seen: list[dict[str, Any]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args(self, hook: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == hook]

    def hook(self, name: str, session: Any, *args: Any) -> Any:
        self.calls.append((name, args))
        self.seen.append(
            {
                "hook": name,
                "session": session,
                "peer": session.peer,
                "tls": session.tls,
                "auth_identity": session.auth_identity,
                "ehlo_name": session.ehlo_name,
            }
        )
        answer = self.answers.get(name)
        if callable(answer):
            answer = answer(session, *args)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def connect(self, session: Any) -> Any:
        return self.hook("connect", session)

    def ehlo(self, session: Any, name: str) -> Any:
        return self.hook("ehlo", session, name)

    def mail(self, session: Any, mail: Any) -> Any:
        return self.hook("mail", session, mail)

    def rcpt(self, session: Any, rcpt: Any) -> Any:
        return self.hook("rcpt", session, rcpt)

    def message_data(self, session: Any, chunk: bytes) -> Any:
        return self.hook("message_data", session, chunk)

    def message(self, session: Any, envelope: Any) -> Any:
        return self.hook("message", session, envelope)

    def vrfy(self, session: Any, text: str) -> Any:
        return self.hook("vrfy", session, text)

    def rset(self, session: Any) -> Any:
        return self.hook("rset", session)

    def quit(self, session: Any) -> Any:
        return self.hook("quit", session)

    def disconnect(self, session: Any) -> Any:
        return self.hook("disconnect", session)


class AuthRecorder(Recorder):
    """A :class:`Recorder` that verifies AUTH against ``users`` (name ->
    password) and ``tokens`` (name -> bearer token)."""

    def __init__(self, users: dict[str, str] | None = None, tokens: dict[str, str] | None = None, **answers: Any) -> None:
        super().__init__(**answers)
        self.users = users if users is not None else {"user": "secret pass"}
        self.tokens = tokens or {}

    def auth(self, session: Any, request: object) -> object:
        answer = self.hook("auth", session, request)
        if answer is not None:
            return answer
        if isinstance(request, sasl.CheckPassword):
            return self.users.get(request.authcid) == request.password
        if isinstance(request, sasl.LookupPassword):
            return self.users.get(request.authcid)
        if isinstance(request, sasl.LookupScram):
            password = self.users.get(request.authcid)
            return None if password is None else scram_credentials(password)
        assert isinstance(request, sasl.CheckToken)
        return self.tokens.get(request.user) == request.token


@functools.cache
def scram_credentials(password: str) -> sasl.ScramCredentials:
    return sasl.ScramCredentials.from_password(password, salt=b"fixed salt 16 by")
