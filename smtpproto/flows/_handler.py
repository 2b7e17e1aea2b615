# Theory of operation
# -------------------
# What a server application sees of the protocol: the ``Handler`` whose
# hooks the server flow (``server.py``) calls, in the order of the session
# (connect, EHLO, MAIL, RCPT, the content, the end of data, RSET, QUIT,
# disconnect), the ``Session`` each hook gets (the connection's facts:
# peer, TLS, the AUTH identity and mechanism, the EHLO name, a PROXY
# header), the ``Envelope`` of a finished transaction, and ``Reject``, the
# exception a hook raises to refuse with a reply of its own.  Nothing here
# reads or writes the wire; the flow turns these answers into replies.
#
# A hook's answer may be an awaitable (``Maybe``): the async adapters await
# it, the blocking one refuses it.  The defaults accept every sender and
# recipient and drop the message, answer VRFY with 252 (RFC 5321 §3.5.3),
# and refuse every AUTH, which is then not offered.
from __future__ import annotations

import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from .._esmtp_events import ProxyHeader
from .._events import Mail, Rcpt, Reply

__all__ = ["Session", "Envelope", "Handler", "Reject", "Maybe", "offers_auth", "overridden_hooks"]

T = TypeVar("T")
#: What a hook returns: its value, or (in the async adapters) an awaitable of it.
Maybe: TypeAlias = T | Awaitable[T]


class Session:
    """What a handler knows about the connection it serves."""

    __slots__ = {
        "peer": "The peer's address as the adapter gave it (or the PROXY/XCLIENT one).",
        "tls": "True once the connection is encrypted.",
        "auth_identity": "The authenticated identity, once AUTH succeeded.",
        "auth_mechanism": (
            'The SASL mechanism (upper case, e.g. ``"PLAIN"``) of the AUTH exchange '
            "that succeeded with 235 (RFC 4954 §4), or None.  Like the identity, "
            "forgotten after STARTTLS (RFC 3207 §4.2)."
        ),
        "ehlo_name": "The name given in EHLO/HELO/LHLO.",
        "proxy": "The PROXY protocol header, when one was read.",
        "_data": "",
    }

    def __init__(
        self,
        peer: Any = None,
        tls: bool = False,
        auth_identity: str | None = None,
        auth_mechanism: str | None = None,
        ehlo_name: str | None = None,
        proxy: ProxyHeader | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.peer = peer
        self.tls = tls
        self.auth_identity = auth_identity
        self.auth_mechanism = auth_mechanism
        self.ehlo_name = ehlo_name
        self.proxy = proxy
        # Made on first use: most sessions never touch it.
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        """Free room for the application's own per-connection state."""
        data = self._data
        if data is None:
            data = self._data = {}
        return data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.peer,
            self.tls,
            self.auth_identity,
            self.auth_mechanism,
            self.ehlo_name,
            self.proxy,
            self._data or {},
        )

    def __eq__(self, other: object) -> bool:
        # As a dataclass compares: same class, equal fields.
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Session)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # unhashable, like a dataclass with eq

    def __repr__(self) -> str:
        names = ("peer", "tls", "auth_identity", "auth_mechanism", "ehlo_name", "proxy", "data")
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(names, self._fields()))
        return f"Session({shown})"


@dataclass(slots=True)
class Envelope:
    """One mail transaction as the server received it."""

    #: The MAIL command (reverse-path and parameters).
    mail: Mail
    #: The accepted RCPT commands, in order.
    recipients: list[Rcpt]
    #: The content as received (unstuffed; line ends as sent), or None for
    #: a streaming handler, which got it through ``message_data``.
    content: bytes | None = None
    #: True when the content came in BDAT chunks (RFC 3030 §2), False
    #: when it came after DATA (RFC 5321 §4.1.1.4).
    chunked: bool = False
    #: True when at least one command of the transaction (MAIL, RCPT,
    #: DATA or BDAT) had been received before the reply to the command
    #: ahead of it was sent: the client did not wait for that reply (RFC
    #: 2920 §3.1).  This is what the server observed: commands a client
    #: sends without waiting but that arrive in separate reads, each
    #: after the previous reply went out, look unpipelined.
    pipelined: bool = False

    @property
    def smtputf8(self) -> bool:
        """True when MAIL carried the SMTPUTF8 parameter (RFC 6531 §3.4)."""
        return "SMTPUTF8" in self.mail.parameters

    @property
    def sender(self) -> str:
        """The reverse-path (``""`` for ``<>``)."""
        return self.mail.reverse_path

    @property
    def recipient_addresses(self) -> list[str]:
        """The forward-paths of the accepted recipients."""
        return [rcpt.forward_path for rcpt in self.recipients]


class Reject(Exception):
    """Raise from a hook to answer with *reply*."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.message}")
        #: The reply to send.
        self.reply = reply


class Handler:
    """The application side of a server.  Override the hooks you need;
    each gets the :class:`Session` and may return a :class:`Reply`, None
    for the usual reply, or raise :class:`Reject`.  In the async adapters a
    hook may be a coroutine function.

    The defaults accept every sender and recipient, accept and drop
    messages, answer VRFY with 252, and refuse every AUTH (AUTH is not
    offered unless :meth:`auth` is overridden).  A hook left as it is here
    is not called at all (the replies are the same); one the subclass
    defines, or the instance holds as an attribute, is.
    """

    #: Hand the content to :meth:`message_data` in chunks as it arrives,
    #: instead of whole to :meth:`message`.
    streaming: bool = False

    def connect(self, session: Session) -> Maybe[Reply | None]:
        """A client connected; return a greeting (554 refuses the session)."""
        return None

    def ehlo(self, session: Session, name: str) -> Maybe[Reply | None]:
        """EHLO, HELO or LHLO with the client's *name*."""
        return None

    def mail(self, session: Session, mail: Mail) -> Maybe[Reply | None]:
        """MAIL FROM, already checked against the grammar and extensions."""
        return None

    def rcpt(self, session: Session, rcpt: Rcpt) -> Maybe[Reply | None]:
        """RCPT TO, already checked against the grammar and extensions."""
        return None

    def message_data(self, session: Session, chunk: bytes) -> Maybe[Reply | None]:
        """A chunk of content (streaming handlers only).  Raising (``Reject``
        or any exception) or returning a 4xx/5xx reply refuses the message:
        the rest of its content skips this hook, :meth:`message` is not
        called, and the end of data is answered with the refusal (451 4.3.0
        for an exception)."""

    def message(
        self, session: Session, envelope: Envelope
    ) -> Maybe[Reply | Sequence[Reply] | None]:
        """The message is complete.  Return its reply; an LMTP server may
        return one reply per recipient, in order."""
        return None

    def auth(self, session: Session, request: object) -> object:
        """Answer a SASL verification request (``smtpproto.sasl``
        ``CheckPassword`` -> bool, ``LookupPassword`` -> str or None,
        ``LookupScram`` -> ``ScramCredentials`` or None, ``CheckToken`` ->
        bool).  The default refuses everybody."""
        return None

    def vrfy(self, session: Session, text: str) -> Maybe[Reply | None]:
        """VRFY *text*; the default is 252 (RFC 5321 §3.5.3)."""
        return None

    def rset(self, session: Session) -> Maybe[None]:
        """The transaction was reset (RSET)."""

    def quit(self, session: Session) -> Maybe[None]:
        """The client said QUIT."""

    def disconnect(self, session: Session) -> Maybe[None]:
        """The connection is over (always called last)."""


#: The hooks of :class:`Handler`, by name.
HOOKS = frozenset(
    ("connect", "ehlo", "mail", "rcpt", "message_data", "message", "auth", "vrfy", "rset", "quit", "disconnect")
)
# The hooks each handler class overrides, worked out once per class.
_OVERRIDDEN: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def _class_hooks(cls: type) -> frozenset[str]:
    """The hooks class *cls* defines a function of its own for."""
    hooks = _OVERRIDDEN.get(cls)
    if hooks is None:
        hooks = frozenset(name for name in HOOKS if getattr(cls, name, None) is not getattr(Handler, name))
        _OVERRIDDEN[cls] = hooks
    return hooks


def overridden_hooks(handler: Handler) -> frozenset[str]:
    """The names of the hooks *handler* has a function of its own for: its
    class overrides them, or the instance holds them as attributes.  The
    server flow calls only those; the others are :class:`Handler`'s own,
    which return None (the usual reply), so leaving them out changes no
    reply and saves a round trip through the adapter per command."""
    hooks = _class_hooks(type(handler))
    own = getattr(handler, "__dict__", None)
    if own and not HOOKS.isdisjoint(own):
        hooks = hooks | HOOKS.intersection(own)
    return hooks


def offers_auth(handler: Handler) -> bool:
    """True when *handler*'s class overrides :meth:`Handler.auth` (AUTH is
    offered only then)."""
    return "auth" in _class_hooks(type(handler))
