# Theory of operation
# -------------------
# A SASL mechanism (RFC 4422) is a short conversation of opaque messages.
# Each side of each mechanism is a small sans-I/O state machine that takes
# and returns *raw* bytes: base64 and the SMTP framing (``AUTH mech
# [initial-response]``, ``334 challenge``, ``*`` to cancel; RFC 4954 §4)
# belong to the SMTP connection, not here.
#
# Client side: ``initial_response()`` gives the bytes to put on the AUTH
# line (``None``: the mechanism is server-first, wait for a challenge;
# ``b""``: an empty initial response, ``=`` on the wire), ``respond()``
# answers one challenge, and ``complete`` says whether a success reply is
# acceptable now.  A mechanism that must verify the server (SCRAM) is only
# complete after it did, so a 235 that arrives early can be refused.
#
# Server side: every call returns a *step* saying what to do next:
#
# * ``Challenge``: send it (334) and pass the client's answer to
#   ``respond()``;
# * ``Success`` / ``Failure``: the exchange is over (235, or the failure's
#   reply code);
# * ``CheckPassword``, ``LookupPassword``, ``LookupScram``, ``CheckToken``:
#   the mechanism needs the application's credential store.  The
#   application answers with ``resume()``; the mechanism never sees the
#   store, and never does I/O or waits.
#
# ``ServerMechanism`` holds the order of calls as data (the phase it is
# in) and checks it before any subclass code runs: each instance serves
# exactly one attempt, a call out of order raises ``SASLError`` naming the
# phase, and nothing goes on after ``Success`` or ``Failure``.  Peer input
# it cannot accept is not an exception on the server side: it ends the
# attempt with ``Failure`` (501 5.5.2 for malformed input; 500 5.5.6 for
# input over ``max_response``, RFC 4954 §6).  Failure
# reasons are fixed texts (at most a count or a U+ code point added), never
# echoes of peer data, because they end up in a reply line.  Identities
# (never passwords) with control characters are refused as malformed too:
# they would travel on into logs and headers.
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

__all__ = [
    "SASLError",
    "ClientMechanism",
    "ServerMechanism",
    "Step",
    "Verification",
    "Challenge",
    "Success",
    "Failure",
    "CheckPassword",
    "LookupPassword",
    "LookupScram",
    "CheckToken",
    "Buffer",
]

#: What the mechanisms accept wherever they take bytes.
Buffer: TypeAlias = bytes | bytearray | memoryview

#: RFC 4954 §4 accepts responses of at least 12288 octets of base64, which
#: decode to 9216 octets; a mechanism allows a little more than that.
MAX_MESSAGE = 12288


class SASLError(Exception):
    """A mechanism got input it cannot accept, or was used out of order.

    Raised by client mechanisms for a malformed or forged challenge (the
    SMTP client then cancels the exchange with ``*``), and by both sides
    when their methods are called in the wrong order.  The message says
    what is wrong.
    """


# --- steps -------------------------------------------------------------------


def _check_text(what: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """Send ``data`` to the client (``334`` + base64 in SMTP) and pass its
    answer to :meth:`ServerMechanism.respond`."""

    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise TypeError(f"challenge data must be bytes, not {type(self.data).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Success:
    """The client is authenticated as ``authcid`` (``235 2.7.0`` in SMTP).

    ``authzid``, when not ``None``, is the identity the client asked to
    act as (RFC 4422 §3.4.1).  Mechanisms that pass it in their
    verification request (PLAIN) leave the decision to the application
    there; for SCRAM the application must check it here before honouring
    it.
    """

    authcid: str
    authzid: str | None = None

    def __post_init__(self) -> None:
        _check_text("authcid", self.authcid)
        _check_text("authzid", self.authzid, optional=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """The attempt failed; answer with ``code`` and ``enhanced``.

    The default is ``535 5.7.8`` (authentication credentials invalid, RFC
    4954 §6).  Malformed input gives ``501 5.5.2``, input over the size
    bound ``500 5.5.6``, an initial response to a server-first mechanism
    ``501 5.7.0``.  ``reason`` is a fixed, human-readable text safe to
    put in the reply line.
    """

    reason: str
    code: int = 535
    enhanced: str = "5.7.8"

    def __post_init__(self) -> None:
        _check_text("reason", self.reason)
        if any(c in self.reason for c in "\r\n\0"):
            raise ValueError("a failure reason must not contain CR, LF or NUL")
        if not isinstance(self.code, int) or not 400 <= self.code <= 599:
            raise ValueError(f"a failure code must be 4xx or 5xx, not {self.code!r}")
        _check_text("enhanced", self.enhanced)
        if not self.enhanced.startswith(f"{self.code // 100}."):
            raise ValueError(
                f"enhanced code {self.enhanced!r} does not match the class of "
                f"reply code {self.code}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckPassword:
    """Ask the application: is ``password`` right for ``authcid``, and may
    it act as ``authzid`` (``None``: as itself)?  Answer ``resume(bool)``.

    The strings are exactly as the client sent them; RFC 4616 §2 recommends
    preparing both sides of the comparison with SASLprep (see
    :func:`smtpproto.sasl.saslprep`).
    """

    authcid: str
    password: str = field(repr=False)
    authzid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupPassword:
    """Ask the application for the shared secret of ``authcid``.

    Answer ``resume(str)``, or ``resume(None)`` when there is no such user.
    """

    authcid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupScram:
    """Ask the application for the SCRAM credentials of ``authcid``.

    Answer ``resume(ScramCredentials)``, or ``resume(None)`` when there is
    no such user.
    """

    authcid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckToken:
    """Ask the application: is the OAuth 2.0 bearer ``token`` valid for
    ``user``?  Answer ``resume(bool)``.

    ``user`` is the ``user=`` value (XOAUTH2) or the GS2 ``a=`` value
    (OAUTHBEARER, RFC 7628 §3.1), ``""`` when the client left it out and
    the token alone names the user.
    """

    user: str
    token: str = field(repr=False)
    authzid: str | None = None


#: A request the application answers with :meth:`ServerMechanism.resume`.
Verification: TypeAlias = CheckPassword | LookupPassword | LookupScram | CheckToken
#: What the server side of a mechanism asks its caller to do next.
Step: TypeAlias = Challenge | Success | Failure | Verification


def malformed(reason: str) -> Failure:
    """``501 5.5.2``: the client's message does not parse (a syntax error,
    RFC 3463 X.5.2)."""
    return Failure(reason=reason, code=501, enhanced="5.5.2")


def rejected(reason: str = "Authentication credentials invalid") -> Failure:
    """``535 5.7.8``: the credentials are wrong (RFC 4954 §6)."""
    return Failure(reason=reason)


class Malformed(Exception):
    """Raised inside a server mechanism; turned into ``malformed(reason)``."""


def as_bytes(what: str, data: object) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return bytes(data)


def decode_utf8(what: str, data: bytes) -> str:
    """Decode UTF-8 for a server, raising ``Malformed`` when it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not valid UTF-8") from None


def has_control(text: str) -> bool:
    """True when *text* holds a C0 or C1 control character or DEL."""
    return any(c < "\x20" or "\x7f" <= c <= "\x9f" for c in text)


def decode_identity(what: str, data: bytes) -> str:
    """Decode an identity a client sent, for a server.

    Control characters are refused: SASLprep prohibits them (RFC 4013
    §2.3), and an identity travels on into logs and trace headers, where a
    CR or LF would be an injection.
    """
    text = decode_utf8(what, data)
    if has_control(text):
        raise Malformed(f"{what} contains a control character")
    return text


# --- client side -------------------------------------------------------------


class ClientMechanism(ABC):
    """The client side of one SASL mechanism, for one attempt."""

    #: The registered mechanism name (upper case).
    name: ClassVar[str]
    #: True when the secret crosses the wire recoverably (PLAIN, LOGIN, and
    #: bearer tokens): never use it over cleartext unless told to.
    plaintext: ClassVar[bool]
    #: Higher is stronger; used to pick the strongest common mechanism.
    strength: ClassVar[int]
    #: The longest challenge accepted, in octets (after base64 decoding).
    max_challenge: ClassVar[int] = MAX_MESSAGE

    @abstractmethod
    def initial_response(self) -> bytes | None:
        """The initial response (RFC 4422 §3.3), or ``None`` to wait for a
        challenge.  ``b""`` is an empty initial response (``=`` in SMTP)."""

    def respond(self, challenge: Buffer) -> bytes:
        """Answer one challenge; raises :class:`SASLError` when it is
        malformed, forged or unexpected."""
        data = as_bytes("a challenge", challenge)
        if len(data) > self.max_challenge:
            raise SASLError(
                f"{self.name}: challenge of {len(data)} octets is over the "
                f"{self.max_challenge}-octet limit"
            )
        return self._respond(data)

    @abstractmethod
    def _respond(self, challenge: bytes) -> bytes: ...

    @property
    @abstractmethod
    def complete(self) -> bool:
        """True when a success reply (235) is acceptable now."""


class ClientFirst(ClientMechanism):
    """A client-first mechanism (RFC 4422 §3.3): the first message goes as
    the initial response, or as the answer to an empty first challenge."""

    def __init__(self) -> None:
        self._sent_first = False

    def initial_response(self) -> bytes:
        if self._sent_first:
            raise SASLError(f"{self.name}: initial_response() called after the first message")
        self._sent_first = True
        return self._first_message()

    def _respond(self, challenge: bytes) -> bytes:
        if not self._sent_first:
            if challenge:
                raise SASLError(
                    f"{self.name} is client-first: its first challenge must be empty, "
                    f"got {len(challenge)} octets"
                )
            self._sent_first = True
            return self._first_message()
        return self._next(challenge)

    @abstractmethod
    def _first_message(self) -> bytes: ...

    @abstractmethod
    def _next(self, challenge: bytes) -> bytes: ...


# --- server side -------------------------------------------------------------


class _Phase(enum.Enum):
    START = "waiting for start()"
    RESPOND = "waiting for respond() (a challenge was sent)"
    RESUME = "waiting for resume() (a verification request is pending)"
    DONE = "finished"


class ServerMechanism(ABC):
    """The server side of one SASL mechanism, for exactly one attempt.

    Call :meth:`start`, then :meth:`respond` after each :class:`Challenge`
    and :meth:`resume` after each verification request, until a
    :class:`Success` or :class:`Failure`.  Create a new instance for every
    ``AUTH`` command.
    """

    #: The registered mechanism name (upper case).
    name: ClassVar[str]
    #: True when the secret crosses the wire recoverably.
    plaintext: ClassVar[bool]
    #: The longest client message accepted, in octets (after base64
    #: decoding); longer ones fail with ``500 5.5.6`` (RFC 4954 §6).
    max_response: ClassVar[int] = MAX_MESSAGE

    def __init__(self) -> None:
        self._phase = _Phase.START

    @property
    def done(self) -> bool:
        """True once the attempt ended in :class:`Success` or :class:`Failure`."""
        return self._phase is _Phase.DONE

    def start(self, initial_response: Buffer | None) -> Step:
        """Begin the attempt, with the client's initial response if any
        (``b""`` for an empty one, ``=`` on the SMTP line)."""
        self._enter(_Phase.START, "start()")
        if initial_response is None:
            return self._after(self._start(None))
        return self._guarded(as_bytes("an initial response", initial_response), self._start)

    def respond(self, data: Buffer) -> Step:
        """Go on with the client's answer to the last :class:`Challenge`."""
        self._enter(_Phase.RESPOND, "respond()")
        return self._guarded(as_bytes("a response", data), self._respond)

    def resume(self, answer: object) -> Step:
        """Go on with the application's answer to the pending verification
        request (see each request class for the type it takes)."""
        self._enter(_Phase.RESUME, "resume()")
        return self._after(self._resume(answer))

    def _enter(self, phase: _Phase, call: str) -> None:
        if self._phase is not phase:
            raise SASLError(f"{self.name}: {call} called while {self._phase.value}")

    def _guarded(self, data: bytes, hook: Callable[[bytes], Step]) -> Step:
        if len(data) > self.max_response:
            step: Step = Failure(
                reason="Authentication Exchange line is too long", code=500, enhanced="5.5.6"
            )
        else:
            try:
                step = hook(data)
            except Malformed as exc:
                step = malformed(str(exc))
        return self._after(step)

    def _after(self, step: Step) -> Step:
        if isinstance(step, Challenge):
            self._phase = _Phase.RESPOND
        elif isinstance(step, (Success, Failure)):
            self._phase = _Phase.DONE
        else:
            self._phase = _Phase.RESUME
        return step

    @abstractmethod
    def _start(self, initial_response: bytes | None) -> Step: ...

    @abstractmethod
    def _respond(self, data: bytes) -> Step: ...

    @abstractmethod
    def _resume(self, answer: object) -> Step: ...


def expect_bool(name: str, answer: object) -> bool:
    """Check the application's answer to a yes/no verification request."""
    if not isinstance(answer, bool):
        raise SASLError(f"{name}: resume() needs a bool here, not {type(answer).__name__}")
    return answer
