# Theory of operation
# -------------------
# Events are the vocabulary both connection classes speak.  They are
# symmetric: the object a client passes to ``send()`` comes out of the
# server's ``next_event()`` equal to it, and a ``Reply`` the server sends
# comes out of the client equal to it (message content is the exception
# that proves the rule: chunk boundaries may differ, the concatenation does
# not).
#
# Every event is a frozen, slotted, keyword-only dataclass.  The public
# constructor validates its arguments (the calling program may be wrong: a
# CR in an address is command injection, attack class 4), raising
# ``LocalProtocolError``.  The parsers build events with ``_trusted()``,
# which skips validation the parser has already done, so nothing is checked
# twice on the hot path.
#
# Commands keep their wire form reachable: paths are stored as the mailbox
# text exactly as sent (quoted local parts keep their quotes), parameters as
# the esmtp-value strings (xtext still encoded); typed accessors decode them.
from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

from ._errors import LocalProtocolError
from ._syntax import (
    GrammarError,
    check_text,
    parse_domain_or_literal,
    parse_forward_path,
    parse_reverse_path,
    validate_keyword,
    quoted,
    validate_param_value,
)

__all__ = [
    "Event",
    "Command",
    "Reply",
    "Ehlo",
    "Helo",
    "Mail",
    "Rcpt",
    "Data",
    "MessageData",
    "EndOfMessage",
    "StuffedContent",
    "Rset",
    "Noop",
    "Vrfy",
    "Expn",
    "Help",
    "Quit",
    "UnknownCommand",
    "CommandRejected",
    "MessageRejected",
    "ConnectionClosed",
    "Parameters",
]

Parameters = Mapping[str, str | None]

_EMPTY_PARAMS: Parameters = types.MappingProxyType({})


class Event:
    """Base class of every event."""

    __slots__ = ()

    @classmethod
    def _trusted(cls, **kwargs: Any) -> Self:
        """Build an event from values a parser has already validated."""
        self = object.__new__(cls)
        try:
            spec = _TRUSTED_FIELDS[cls]
        except KeyError:
            spec = _TRUSTED_FIELDS[cls] = _field_spec(cls)
        for name, default, factory in spec:
            if name in kwargs:
                value = kwargs[name]
            elif factory is not None:
                value = factory()
            else:
                value = default
            object.__setattr__(self, name, value)
        return self


# The fields of each event class as (name, default, default factory), read
# from ``dataclasses.fields`` once per class: ``_trusted`` runs for every
# parsed command and reply, and ``fields()`` walks the class each time.
_TRUSTED_FIELDS: dict[type[Event], tuple[tuple[str, Any, Callable[[], Any] | None], ...]] = {}


def _field_spec(cls: type[Event]) -> tuple[tuple[str, Any, Callable[[], Any] | None], ...]:
    return tuple(
        (f.name, f.default, None if f.default_factory is MISSING else f.default_factory)
        for f in fields(cls)  # type: ignore[arg-type]
    )


class Command(Event):
    """Base class of the events a client sends and a server receives.

    ``verb`` is the command word on the wire.
    """

    __slots__ = ()
    verb: ClassVar[str] = ""

    def _argument(self) -> str:
        """The text after the verb (without the separating space)."""
        return ""


def _local_error(exc: GrammarError) -> LocalProtocolError:
    return LocalProtocolError(str(exc))


def _check(what: str, text: str) -> None:
    try:
        check_text(what, text)
    except GrammarError as exc:
        raise _local_error(exc) from None


def _check_path(what: str, mailbox: str, parse: Callable[[str], str]) -> None:
    # Validate the path as the server will read it, length included
    # (§4.5.3.1.3).  The parser drops a source route, so a field holding one
    # would not survive the trip: the field is the mailbox alone.
    _check(what, mailbox)
    try:
        if parse(f"<{mailbox}>") != mailbox:
            raise GrammarError(f"{what} {mailbox!r} must be a mailbox without a source route")
    except GrammarError as exc:
        raise _local_error(exc) from None


def _check_domain(what: str, domain: str) -> None:
    """The argument of EHLO, HELO and LHLO: a Domain or address-literal."""
    _check(what, domain)
    try:
        parse_domain_or_literal(domain)
    except GrammarError as exc:
        raise _local_error(exc) from None


def _check_encodable(line: str) -> None:
    """Reply text goes out as UTF-8 (a lone surrogate cannot), with the
    octets a client could not decode carried as surrogate escapes."""
    try:
        line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"reply text {quoted(line)} cannot be encoded as UTF-8") from None


def _freeze_params(params: Parameters) -> Parameters:
    if not params:
        return _EMPTY_PARAMS
    frozen: dict[str, str | None] = {}
    try:
        for keyword, value in params.items():
            validate_keyword(keyword)
            if value is not None:
                _check(f"parameter {keyword}", value)
                validate_param_value(keyword, value)
            key = keyword.upper()
            if key in frozen:
                raise GrammarError(f"parameter {key} given more than once")
            frozen[key] = value
    except GrammarError as exc:
        raise _local_error(exc) from None
    return types.MappingProxyType(frozen)


def _format_params(params: Parameters) -> str:
    return "".join(f" {k}" if v is None else f" {k}={v}" for k, v in params.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(Event):
    """A server reply (RFC 5321 §4.2), the greeting included.

    ``code`` is the three-digit reply code, ``enhanced`` the RFC 3463
    enhanced status code (``"2.1.0"``) or ``None``, and ``text`` the text
    lines without the code or enhanced code.  A multiline reply has several
    text lines; every line carries the same code (§4.2.1).  A line may be
    longer than the 512 octets of §4.5.3.1.5 (a client core takes such
    replies from servers that send them, up to
    ``ClientConfig.max_reply_line``), but a server refuses to send it.
    """

    code: int
    text: tuple[str, ...] = ("",)
    enhanced: str | None = None

    def __post_init__(self) -> None:
        # Reply-code = %x32-35 %x30-35 %x30-39 (§4.2)
        if not isinstance(self.code, int) or not (
            200 <= self.code <= 559 and (self.code // 10) % 10 <= 5
        ):
            raise LocalProtocolError(f"invalid reply code {self.code!r}")
        if isinstance(self.text, str):
            object.__setattr__(self, "text", (self.text,))
        if not self.text:
            raise LocalProtocolError("a reply needs at least one text line")
        for line in self.text:
            _check("reply text", line)
            if not line.isascii():
                _check_encodable(line)
        if self.enhanced is not None:
            from ._replies import check_enhanced

            check_enhanced(self.code, self.enhanced)

    @property
    def is_success(self) -> bool:
        """True for 2xx replies."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """True for 3xx replies (go ahead with the data)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """True for 4xx replies (try again later)."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """True for 5xx replies."""
        return self.code >= 500

    @property
    def message(self) -> str:
        """The text lines joined with newlines."""
        return "\n".join(self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ehlo(Command):
    """``EHLO domain`` (§4.1.1.1): open a session with extensions."""

    verb: ClassVar[str] = "EHLO"
    domain: str

    def __post_init__(self) -> None:
        _check_domain("EHLO domain", self.domain)

    def _argument(self) -> str:
        return self.domain


@dataclass(frozen=True, slots=True, kw_only=True)
class Helo(Command):
    """``HELO domain`` (§4.1.1.1): open a session without extensions."""

    verb: ClassVar[str] = "HELO"
    domain: str

    def __post_init__(self) -> None:
        _check_domain("HELO domain", self.domain)

    def _argument(self) -> str:
        return self.domain


@dataclass(frozen=True, slots=True, kw_only=True)
class Mail(Command):
    """``MAIL FROM:<reverse-path> [parameters]`` (§4.1.1.2).

    ``reverse_path`` is the mailbox without angle brackets, ``""`` for the
    null reverse-path ``<>``.  ``parameters`` maps upper-cased keywords to
    their esmtp-value (``None`` for a keyword without a value), e.g.
    ``{"SIZE": "1024", "BODY": "8BITMIME"}``.
    """

    verb: ClassVar[str] = "MAIL"
    reverse_path: str
    parameters: Parameters = field(default_factory=lambda: _EMPTY_PARAMS)

    def __post_init__(self) -> None:
        _check_path("reverse-path", self.reverse_path, parse_reverse_path)
        object.__setattr__(self, "parameters", _freeze_params(self.parameters))

    def _argument(self) -> str:
        return f"FROM:<{self.reverse_path}>{_format_params(self.parameters)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rcpt(Command):
    """``RCPT TO:<forward-path> [parameters]`` (§4.1.1.3).

    ``forward_path`` is the mailbox without angle brackets (a source route
    is dropped when parsed); ``"Postmaster"`` on its own is allowed.
    """

    verb: ClassVar[str] = "RCPT"
    forward_path: str
    parameters: Parameters = field(default_factory=lambda: _EMPTY_PARAMS)

    def __post_init__(self) -> None:
        _check_path("forward-path", self.forward_path, parse_forward_path)
        object.__setattr__(self, "parameters", _freeze_params(self.parameters))

    def _argument(self) -> str:
        return f"TO:<{self.forward_path}>{_format_params(self.parameters)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Data(Command):
    """``DATA`` (§4.1.1.4): ask to send the message content."""

    verb: ClassVar[str] = "DATA"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageData(Event):
    """A chunk of message content.

    Sent by a client: the raw message (any line endings, not dot-stuffed);
    the client core normalises and stuffs it.  Received by a server: the
    content as received, with the stuffing dots removed.
    """

    data: bytes

    def __post_init__(self) -> None:
        check_message_data(self.data)


def check_message_data(data: object) -> None:
    """Refuse message content that is not bytes-like (a ``str``, say)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"message data must be bytes, not {type(data).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfMessage(Event):
    """The end of the message content (``CRLF.CRLF`` on the wire)."""


# Held by StuffedContent's maker only: without it, the constructor refuses.
_MAKER = object()


class StuffedContent(Event):
    """A whole message's DATA content, dot-stuffed and terminated ahead of
    time by :meth:`ClientConnection.stuff_content`.

    A client sends it in place of its ``MessageData`` chunks and the
    ``EndOfMessage``, once DATA got its 354, as it would send them; the
    stuffing work is done before (while the replies to a pipelined MAIL,
    RCPT, DATA group are on their way).  It cannot be built by hand: the
    wire bytes it carries are trusted to hold exactly one terminator, at
    the end (RFC 5321 §4.5.2).
    """

    __slots__ = ("wire", "eight_bit", "max_line")

    #: The content as it goes out: normalised, stuffed, ``CRLF . CRLF`` last.
    wire: bytes
    #: True when the content has octets above 127 (it needs 8BITMIME).
    eight_bit: bool
    #: The line limit it was checked against (``max_line_length``).
    max_line: int | None

    def __init__(self, wire: bytes, eight_bit: bool, max_line: int | None, *, _maker: object = None) -> None:
        if _maker is not _MAKER:
            raise TypeError("StuffedContent is made by ClientConnection.stuff_content(), not by hand")
        object.__setattr__(self, "wire", wire)
        object.__setattr__(self, "eight_bit", eight_bit)
        object.__setattr__(self, "max_line", max_line)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"StuffedContent is immutable: cannot set {name}")

    def __repr__(self) -> str:
        return f"StuffedContent(<{len(self.wire)} octets>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rset(Command):
    """``RSET`` (§4.1.1.5): abort the current transaction."""

    verb: ClassVar[str] = "RSET"


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop(Command):
    """``NOOP [string]`` (§4.1.1.9)."""

    verb: ClassVar[str] = "NOOP"
    text: str = ""

    def __post_init__(self) -> None:
        _check("NOOP argument", self.text)

    def _argument(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class Vrfy(Command):
    """``VRFY string`` (§4.1.1.6): verify a user name or mailbox."""

    verb: ClassVar[str] = "VRFY"
    text: str

    def __post_init__(self) -> None:
        _check("VRFY argument", self.text)
        if not self.text:
            raise LocalProtocolError("VRFY needs an argument")

    def _argument(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class Expn(Command):
    """``EXPN string`` (§4.1.1.7): expand a mailing list."""

    verb: ClassVar[str] = "EXPN"
    text: str

    def __post_init__(self) -> None:
        _check("EXPN argument", self.text)
        if not self.text:
            raise LocalProtocolError("EXPN needs an argument")

    def _argument(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class Help(Command):
    """``HELP [string]`` (§4.1.1.8)."""

    verb: ClassVar[str] = "HELP"
    topic: str = ""

    def __post_init__(self) -> None:
        _check("HELP argument", self.topic)

    def _argument(self) -> str:
        return self.topic


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit(Command):
    """``QUIT`` (§4.1.1.10): end the session."""

    verb: ClassVar[str] = "QUIT"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownCommand(Command):
    """A command the core does not implement.

    A server receives it for any verb it does not know, so the application
    may implement it (``XCLIENT``, say) or answer with
    :attr:`suggested_reply` (500 5.5.1).  A client may send one to speak an
    extension the core does not model; the verb must be an esmtp-keyword.
    """

    name: str
    argument: str = ""

    def __post_init__(self) -> None:
        _check("command verb", self.name)
        _check("command argument", self.argument)
        try:
            validate_keyword(self.name)
        except GrammarError as exc:
            raise _local_error(exc) from None
        # Verbs are case-insensitive (§2.4); keep them upper-cased so that the
        # event a client sends equals the event the server receives.
        object.__setattr__(self, "name", self.name.upper())

    def _argument(self) -> str:
        return self.argument

    @property
    def suggested_reply(self) -> Reply:
        """``500 5.5.1 Command unrecognized`` (§4.2.4)."""
        from ._replies import UNRECOGNIZED

        return UNRECOGNIZED


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRejected(Event):
    """A command line the server core refused; the session goes on.

    Server only.  ``reply`` is the suggested answer (500 for an over-long
    or malformed line, 501 for bad arguments, 503 for a bad sequence, 555
    for an unknown parameter...), ``reason`` says why in plain words, and
    ``command`` is the parsed command when the line could be parsed.  The
    application sends ``reply`` (or its own) and the core goes on with the
    next command.
    """

    reply: Reply
    reason: str
    command: Command | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRejected(Event):
    """The message content ended but must not be delivered.

    Server only; it takes the place of :class:`EndOfMessage`.  Raised for
    bare CR or LF in the data (unless allowed), or data over the size
    limit.  Everything received since ``DATA`` must be thrown away, and
    ``reply`` (or another 4xx/5xx) sent.
    """

    reply: Reply
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The session is over: the peer closed the connection, or a reply
    (221 after QUIT, 421) ended the session.  Close the transport."""


# Builders for the events a server core makes for every message, from values
# its parser has already validated: ``_trusted`` without its keyword dict
# and field walk (the slots' own descriptors set the frozen fields).
_new = object.__new__
_set_data = MessageData.__dict__["data"].__set__
_set_reverse_path = Mail.__dict__["reverse_path"].__set__
_set_mail_parameters = Mail.__dict__["parameters"].__set__
_set_forward_path = Rcpt.__dict__["forward_path"].__set__
_set_rcpt_parameters = Rcpt.__dict__["parameters"].__set__


def _message_data(data: bytes) -> MessageData:
    """``MessageData._trusted(data=data)``, faster."""
    event = _new(MessageData)
    _set_data(event, data)
    return event


def _mail(reverse_path: str, parameters: Parameters) -> Mail:
    """``Mail._trusted(...)`` for a parsed path and parameters."""
    event = _new(Mail)
    _set_reverse_path(event, reverse_path)
    _set_mail_parameters(event, parameters)
    return event


def _rcpt(forward_path: str, parameters: Parameters) -> Rcpt:
    """``Rcpt._trusted(...)`` for a parsed path and parameters."""
    event = _new(Rcpt)
    _set_forward_path(event, forward_path)
    _set_rcpt_parameters(event, parameters)
    return event
