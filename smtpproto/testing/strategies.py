# Theory of operation
# -------------------
# Hypothesis strategies for SMTP, built on the sans-I/O core alone.  Three
# families:
#
# * grammar values (domains, address literals, local parts, mailboxes,
#   ESMTP parameters): valid per RFC 5321 §4.1.2-§4.1.3 and within the
#   §4.5.3.1 length limits, measured in UTF-8 octets;
#   ``invalid_mailboxes`` breaks that grammar one rule at a time.  They
#   live in ``_grammar``; this module re-exports them (and the ``_syntax``
#   limits ``MAX_DOMAIN``, ``MAX_LOCAL_PART`` and ``MAX_PATH``);
# * protocol values (command and reply events, raw command lines, message
#   bodies with hostile line endings, whole client sessions: SMTP with DATA
#   or BDAT, with or without AUTH PLAIN, and LMTP);
# * perturbations (chunkings and split points, byte-level mutations).
#
# Everything is composed from ``sampled_from``, ``text(alphabet=...)`` and
# small lists rather than regexes, so generation is fast enough for
# Hypothesis' health checks at default settings.  Sizes are kept small on
# purpose; the length limits get their own "long" branches, drawn rarely.
from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from hypothesis import strategies as st

from .._client import ClientConfig, ClientConnection
from .._commands import format_command
from .._esmtp_events import (
    XCLIENT_ATTRIBUTES,
    Auth,
    AuthResponse,
    Bdat,
    EndOfChunk,
    Lhlo,
    StartTLS,
    Xclient,
)
from .._events import (
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    UnknownCommand,
    Vrfy,
)
from .._syntax import (  # MAX_* and octets: importable from here as before
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    octets,
    xtext_encode,
)
from ._grammar import (
    _LDH,
    _LET_DIG,
    _NON_ASCII,
    _PRINTABLE,
    _alphabet,
    address_literals,
    domains,
    esmtp_parameters,
    invalid_mailboxes,
    local_parts,
    mail_parameters,
    mailboxes,
    rcpt_parameters,
)

__all__ = [
    "domains",
    "address_literals",
    "local_parts",
    "mailboxes",
    "invalid_mailboxes",
    "esmtp_parameters",
    "mail_parameters",
    "rcpt_parameters",
    "commands",
    "command_lines",
    "replies",
    "message_bodies",
    "split_points",
    "chunkings",
    "sessions",
    "session_transcripts",
    "transcribe",
    "mutated_bytes",
    "COMMAND_TYPES",
]

#: Every command event type a client can send: those of RFC 5321, those
#: of the ESMTP extensions that add commands (STARTTLS, AUTH, BDAT, LHLO,
#: XCLIENT) and ``UnknownCommand``.  The SASL lines of an AUTH exchange
#: (``AuthResponse``, ``AuthCancel``) and message content are not commands.
COMMAND_TYPES: tuple[type[Command], ...] = (
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Vrfy,
    Expn,
    Help,
    Quit,
    StartTLS,
    Auth,
    Bdat,
    Lhlo,
    Xclient,
    UnknownCommand,
)

_KNOWN_VERBS = frozenset(
    cls.verb for cls in COMMAND_TYPES if cls is not UnknownCommand
)


# -- commands and replies ----------------------------------------------------


def _free_text(min_size: int = 0) -> st.SearchStrategy[str]:
    """Command argument text: printable ASCII and some non-ASCII, never
    control characters (which a server refuses, §4.1.1), and not only
    spaces when an argument is required."""
    alphabet = st.one_of(st.sampled_from(_PRINTABLE), _NON_ASCII)
    text = st.text(alphabet=alphabet, min_size=min_size, max_size=30)
    if min_size:
        text = text.filter(lambda value: value.strip(" ") != "")
    return text


_HELLO_NAMES = st.one_of(domains(max_octets=64), address_literals())


def _unknown_verbs() -> st.SearchStrategy[str]:
    verb = st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(_LET_DIG),
        st.text(alphabet=_LDH, max_size=8),
    )
    return verb.filter(lambda name: name.upper() not in _KNOWN_VERBS)


# Registered SASL mechanisms (RFC 4422 §3.1 names) and made-up ones, in
# either case: the event upper-cases the name.
_SASL_MECHANISMS = st.one_of(
    st.sampled_from(
        ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER", "EXTERNAL",
         "plain", "login"]
    ),
    # RFC 4422 §3.1: sasl-mech = 1*20mech-char
    st.text(alphabet=string.ascii_uppercase + string.digits + "-_", min_size=1, max_size=20),
)


def _auths() -> st.SearchStrategy[Auth]:
    # RFC 4954 §4: no initial response, an empty one ("="), or base64 data;
    # kept short so the command line stays within 512 octets.
    initial = st.one_of(st.none(), st.just(b""), st.binary(min_size=1, max_size=96))
    return st.builds(Auth, mechanism=_SASL_MECHANISMS, initial_response=initial)


def _bdats() -> st.SearchStrategy[Bdat]:
    # RFC 3030 §2: chunk-size = 1*DIGIT.  Mostly small; sometimes larger
    # than the 64 KB a server must at least accept (RFC 5321 §4.5.3.1.7).
    size = st.one_of(st.integers(0, 64), st.integers(0, 100_000))
    return st.builds(Bdat, size=size, last=st.booleans())


_PORTS = st.integers(0, 65535).map(str)
_ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"IPV6:{address}"),
    st.just("[UNAVAILABLE]"),
)
# Postfix XCLIENT_README: the attributes and what each value looks like;
# every value travels as xtext.
_XCLIENT_VALUES: dict[str, st.SearchStrategy[str]] = {
    "NAME": st.one_of(domains(max_octets=64), st.sampled_from(["[UNAVAILABLE]", "[TEMPUNAVAIL]"])),
    "ADDR": _ADDRESSES,
    "PORT": _PORTS,
    "PROTO": st.sampled_from(["SMTP", "ESMTP"]),
    "HELO": domains(max_octets=64),
    "LOGIN": st.text(alphabet=_PRINTABLE, min_size=1, max_size=20),
    "DESTADDR": _ADDRESSES,
    "DESTPORT": _PORTS,
}


@st.composite
def _xclients(draw: st.DrawFn) -> Xclient:
    names = draw(
        st.lists(st.sampled_from(sorted(XCLIENT_ATTRIBUTES)), min_size=1, max_size=4, unique=True)
    )
    attributes = {
        draw(st.sampled_from([name, name.lower()])): xtext_encode(draw(_XCLIENT_VALUES[name]))
        for name in names
    }
    return Xclient(attributes=attributes)


def _command_strategy(kind: type[Command]) -> st.SearchStrategy[Command]:
    if kind is Ehlo:
        return st.builds(Ehlo, domain=_HELLO_NAMES)
    if kind is Helo:
        return st.builds(Helo, domain=_HELLO_NAMES)
    if kind is Lhlo:
        return st.builds(Lhlo, domain=_HELLO_NAMES)
    if kind is Auth:
        return _auths()
    if kind is Bdat:
        return _bdats()
    if kind is Xclient:
        return _xclients()
    if kind is Mail:
        return st.builds(
            Mail,
            reverse_path=st.one_of(st.just(""), mailboxes()),
            parameters=esmtp_parameters(),
        )
    if kind is Rcpt:
        forward = st.one_of(
            mailboxes(), st.sampled_from(["Postmaster", "postmaster", "POSTMASTER"])
        )
        return st.builds(Rcpt, forward_path=forward, parameters=esmtp_parameters())
    if kind is Noop:
        return st.builds(Noop, text=_free_text())
    if kind is Vrfy:
        return st.builds(Vrfy, text=_free_text(1))
    if kind is Expn:
        return st.builds(Expn, text=_free_text(1))
    if kind is Help:
        return st.builds(Help, topic=_free_text())
    if kind is UnknownCommand:
        return st.builds(UnknownCommand, name=_unknown_verbs(), argument=_free_text())
    if kind in (Data, Rset, Quit, StartTLS):
        return st.just(kind())
    raise ValueError(f"not a command type: {kind!r}")


def commands(kinds: Iterable[type[Command]] | None = None) -> st.SearchStrategy[Command]:
    """Client command events with valid arguments.

    EHLO/HELO/LHLO with a domain or address literal, MAIL with a mailbox or
    the null path and syntactically valid parameters, RCPT with a mailbox or
    Postmaster, DATA, RSET, NOOP, VRFY, EXPN, HELP, QUIT, STARTTLS, AUTH
    with a registered or made-up SASL mechanism and no, an empty or a
    binary initial response (RFC 4954 §4), ``BDAT size [LAST]`` (RFC 3030;
    the chunk's octets are not part of the command: send ``size`` octets
    after it), XCLIENT with one to four attributes and xtext values, and
    ``UnknownCommand`` with a verb the core does not know.  Free-text
    arguments hold no control characters and every line fits in 512
    octets, so a server parses each command back to an equal event.
    *kinds* limits the command types drawn (see :data:`COMMAND_TYPES`).
    """
    chosen = tuple(kinds) if kinds is not None else COMMAND_TYPES
    return st.one_of([_command_strategy(kind) for kind in chosen])


def command_lines() -> st.SearchStrategy[bytes]:
    """Raw command lines, as bytes: well-formed ones from :func:`commands`
    (ending in CRLF), the same lines mutated by :func:`mutated_bytes`, and
    junk (a verb-like word followed by arbitrary octets and a line end).
    Never empty: ``receive_data(b"")`` means the end of the input.
    """
    valid = commands().map(format_command)
    junk = st.builds(
        lambda verb, argument, end: verb + b" " + argument + end,
        st.sampled_from([b"MAIL", b"RCPT", b"EHLO", b"DATA", b"mail from:", b"X"]),
        st.binary(max_size=40),
        st.sampled_from([b"\r\n", b"\n", b"\r", b""]),
    )
    return st.one_of(valid, mutated_bytes(valid).filter(len), junk)


_ENHANCED_LOOKALIKE = tuple(f"{digit}." for digit in "245")


@st.composite
def replies(draw: st.DrawFn, *, max_lines: int = 4) -> Reply:
    """Valid :class:`~smtpproto.Reply` events (§4.2).

    Codes 200-559 whose second digit is 0-5; an RFC 3463 enhanced code
    (class equal to the first digit, so never on 3xx) or none; 1 to
    *max_lines* text lines without CR, LF or NUL.  Without an enhanced code
    the first line never starts like one (``"2."``), so the reply reads back
    equal from the wire.
    """
    first = draw(st.integers(2, 5))
    code = first * 100 + draw(st.integers(0, 5)) * 10 + draw(st.integers(0, 9))
    enhanced = None
    if first != 3 and draw(st.booleans()):
        subject = draw(st.integers(0, 999))
        detail = draw(st.integers(0, 999))
        enhanced = f"{first}.{subject}.{detail}"
    line = st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=40
    )
    text = draw(st.lists(line, min_size=1, max_size=max_lines))
    if enhanced is None and text[0].startswith(_ENHANCED_LOOKALIKE):
        text[0] = "x" + text[0]
    return Reply(code=code, text=tuple(text), enhanced=enhanced)


# -- message content ------------------------------------------------------------

_HOSTILE = [
    b"\r\n",
    b"\r",
    b"\n",
    b".",
    b"..",
    b".\r\n",
    b"\r\n.\r\n",
    b"\r\n..\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.",
    b"\r\r\n",
    b"\n\r",
    b"\x00",
    b".\x00",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n\r\n",
]

_WORDS = st.text(alphabet=_PRINTABLE, max_size=30).map(lambda text: text.encode("ascii"))


def _break_long_lines(body: bytes, limit: int) -> bytes:
    """Insert CRLF into every run of more than *limit* octets without LF.

    A bare CR counts as an octet of the line: over DATA the client core
    makes it a line end, but BDAT content goes out as it is, where only LF
    ends a line (the client core counts BDAT lines between LFs).
    """
    out = bytearray()
    run = 0
    for byte in body:
        if byte == 0x0A:
            run = 0
        elif run == limit:
            out += b"\r\n"
            run = 1
        else:
            run += 1
        out.append(byte)
    return bytes(out)


@st.composite
def message_bodies(
    draw: st.DrawFn, *, eight_bit: bool = True, max_line_length: int | None = 1000
) -> bytes:
    """Message content with hostile line endings, as a client would pass it.

    Bodies are assembled from pieces: bare CR, bare LF, CRLF, lines that are
    just ``.``, dots at line starts, ``CRLF.CRLF`` and its smuggling cousins
    (``LF.LF``, ``CR.CR``, ``LF.CRLF``...) inside, NUL, plain words and, with
    *eight_bit*, arbitrary octets.  They may be empty or lack a final line
    end.  With *max_line_length* (CRLF included, §4.5.3.1.6) no line is
    longer, lines counted between LFs (a bare CR ends no line on the wire
    of BDAT), so a client core with that limit accepts every body, over
    DATA and over BDAT.
    """
    pieces: list[st.SearchStrategy[bytes]] = [st.sampled_from(_HOSTILE), _WORDS]
    if eight_bit:
        pieces.append(st.binary(max_size=16))
    if max_line_length is not None:
        longest = max_line_length - 2
        pieces.append(st.integers(max(longest - 8, 1), longest).map(lambda size: b"L" * size))
    body = b"".join(draw(st.lists(st.one_of(pieces), max_size=24)))
    if max_line_length is not None:
        body = _break_long_lines(body, max_line_length - 2)
    return body


def split_points(length: int) -> st.SearchStrategy[list[int]]:
    """Sorted, distinct offsets in ``1 .. length-1`` at which to split a
    buffer of *length* octets: none, a few, or every one (one byte at a
    time)."""
    if length <= 1:
        return st.just([])
    return st.one_of(
        st.just([]),
        st.lists(st.integers(1, length - 1), unique=True, max_size=12).map(sorted),
        st.just(list(range(1, length))),
    )


def _split(data: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """Ways to cut *data* into non-empty chunks that join back to it (an
    empty *data* gives ``[]``).  Use it for both ``MessageData`` chunks and
    ``receive_data`` calls."""
    if not data:
        return st.just([])
    return split_points(len(data)).map(lambda points: _split(data, points))


# -- sessions ------------------------------------------------------------------


@st.composite
def _chunks(draw: st.DrawFn, body: bytes) -> list[Event]:
    """*body* as one to three BDAT chunks (RFC 3030 §2): ``Bdat(size)``, the
    octets as ``MessageData`` pieces, ``EndOfChunk``; the last chunk is
    ``BDAT n LAST`` and ends with ``EndOfMessage``.  Chunks may be empty
    (``BDAT 0 LAST`` is legal)."""
    count = draw(st.integers(1, 3))
    points = sorted(draw(st.integers(0, len(body))) for _ in range(count - 1))
    pieces = _split(body, points)
    events: list[Event] = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        events.append(Bdat(size=len(piece), last=last))
        events.extend(MessageData(data=chunk) for chunk in draw(chunkings(piece)))
        events.append(EndOfMessage() if last else EndOfChunk())
    return events


@st.composite
def _transaction(draw: st.DrawFn, utf8: bool, abort: bool, chunking: bool) -> list[Event]:
    use_utf8 = utf8 and draw(st.booleans())
    params = draw(mail_parameters(max_size=1_000_000, smtputf8=True if use_utf8 else None))
    reverse_path = draw(st.one_of(st.just(""), mailboxes(utf8=use_utf8)))
    recipient = st.one_of(mailboxes(utf8=use_utf8), st.just("Postmaster"))
    events: list[Event] = [
        Rcpt(forward_path=forward, parameters=draw(rcpt_parameters()))
        for forward in draw(st.lists(recipient, min_size=0 if abort else 1, max_size=3))
    ]
    if abort:
        events.append(Rset())
    else:
        body = draw(message_bodies())
        use_bdat = chunking and draw(st.booleans())
        body_type = None
        if use_bdat and draw(st.booleans()):
            # RFC 3030 §3: BINARYMIME content is sent with BDAT only.
            body_type = "BINARYMIME"
        elif not body.isascii():
            # RFC 6152 §3: 8-bit content needs BODY=8BITMIME on MAIL.
            body_type = "8BITMIME"
        if body_type is not None:
            params = {key: value for key, value in params.items() if key.upper() != "BODY"}
            params["BODY"] = body_type
        if use_bdat:
            events.extend(draw(_chunks(body)))
        else:
            events.append(Data())
            events.extend(MessageData(data=chunk) for chunk in draw(chunkings(body)))
            events.append(EndOfMessage())
    return [Mail(reverse_path=reverse_path, parameters=params), *events]


# SASL identities and passwords: printable, no control characters (which a
# server refuses in an identity) and no NUL (RFC 4616 §2: SAFE).
_SASL_TEXT = st.text(alphabet=_alphabet(_PRINTABLE, True), min_size=1, max_size=20)


@st.composite
def _plain_auth(draw: st.DrawFn) -> list[Event]:
    """One AUTH PLAIN exchange (RFC 4616): the message ``[authzid] NUL
    authcid NUL passwd`` as the initial response, or as the answer to the
    server's empty 334 challenge."""
    authzid = draw(st.one_of(st.just(""), _SASL_TEXT))
    authcid, password = draw(_SASL_TEXT), draw(_SASL_TEXT)
    message = b"\0".join(text.encode("utf-8") for text in (authzid, authcid, password))
    if draw(st.booleans()):
        return [Auth(mechanism="PLAIN", initial_response=message)]
    return [Auth(mechanism="PLAIN"), AuthResponse(data=message)]


@st.composite
def sessions(
    draw: st.DrawFn,
    *,
    utf8: bool = False,
    max_steps: int = 4,
    chunking: bool = True,
    auth: bool = False,
    lmtp: bool = False,
) -> list[Event]:
    """A valid client session as a list of client events.

    EHLO first, then up to *max_steps* steps among mail transactions (MAIL
    with extension parameters, 1-3 RCPT, then the body of
    :func:`message_bodies` either after DATA as ``MessageData`` chunks and
    ``EndOfMessage``, or, with *chunking*, as one to three BDAT chunks:
    ``Bdat``, ``MessageData``, ``EndOfChunk``, and ``Bdat(last=True)``
    ending with ``EndOfMessage``, sometimes with ``BODY=BINARYMIME``),
    transactions aborted with RSET, RSET, NOOP, HELP, VRFY and a second EHLO;
    QUIT at the end or not.  A server core offering PIPELINING, SIZE,
    8BITMIME, CHUNKING, BINARYMIME, SMTPUTF8 and DSN with its default limits
    (``ServerConfig()``) accepts every command, so each event may be sent
    after the previous one's reply.  With ``utf8=True`` transactions may use
    non-ASCII addresses (and then declare SMTPUTF8).

    With ``auth=True`` the session holds one AUTH PLAIN exchange (RFC 4616)
    outside any transaction: ``Auth`` with the PLAIN message as its initial
    response, or ``Auth`` alone answered by an ``AuthResponse`` after the
    server's 334.  A server with ``auth_mechanisms=("PLAIN",)`` and
    ``auth_plaintext=True`` accepts it when the application answers the
    ``CheckPassword`` request (``auth_request``) with True through
    ``auth_reply``; the client needs ``allow_plaintext_auth=True``.

    With ``lmtp=True`` the session is LMTP (RFC 2033): LHLO instead of
    EHLO, for a ``ServerConfig(lmtp=True)`` and a ``ClientConfig(lmtp=True)``;
    the end of each message then takes one reply per recipient.
    """
    hello = Lhlo if lmtp else Ehlo
    events: list[Event] = [hello(domain=draw(_HELLO_NAMES))]
    steps = ["transaction", "transaction", "aborted", "rset", "noop", "help", "vrfy", "ehlo"]
    chosen = draw(st.lists(st.sampled_from(steps), max_size=max_steps))
    if auth:
        # RFC 4954 §4: AUTH once per session, never inside a transaction.
        chosen.insert(draw(st.integers(0, len(chosen))), "auth")
    for step in chosen:
        if step == "transaction" or step == "aborted":
            events.extend(draw(_transaction(utf8, step == "aborted", chunking)))
        elif step == "auth":
            events.extend(draw(_plain_auth()))
        elif step == "rset":
            events.append(Rset())
        elif step == "noop":
            events.append(draw(_command_strategy(Noop)))
        elif step == "help":
            events.append(draw(_command_strategy(Help)))
        elif step == "vrfy":
            events.append(draw(_command_strategy(Vrfy)))
        else:
            events.append(hello(domain=draw(_HELLO_NAMES)))
    if draw(st.booleans()):
        events.append(Quit())
    return events


def session_transcripts(
    *, utf8: bool = False, chunking: bool = True, auth: bool = False, lmtp: bool = False
) -> st.SearchStrategy[bytes]:
    """The client's side of a valid session as wire bytes: :func:`sessions`
    (with the same options) passed through :func:`transcribe`.  Feed the
    result, or :func:`mutated_bytes` of it, to a server under test."""
    return sessions(utf8=utf8, chunking=chunking, auth=auth, lmtp=lmtp).map(transcribe)


_TRANSCRIPT_EHLO = (
    b"250-test.example\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n"
    b"250-CHUNKING\r\n250-BINARYMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 AUTH PLAIN\r\n"
)


def _transcript_replies(client: ClientConnection, event: Event) -> list[bytes]:
    """The replies a server that accepts everything gives to *event*."""
    if isinstance(event, (MessageData, Bdat)):
        return []  # content, or a chunk whose reply follows its octets
    if isinstance(event, (Ehlo, Lhlo)):
        return [_TRANSCRIPT_EHLO]
    if isinstance(event, Data):
        return [b"354 go ahead\r\n"]
    if isinstance(event, Quit):
        return [b"221 bye\r\n"]
    if isinstance(event, Auth) and event.initial_response is None:
        return [b"334 \r\n"]
    if isinstance(event, (Auth, AuthResponse)):
        return [b"235 2.7.0 ok\r\n"]
    if isinstance(event, EndOfMessage) and client.config.lmtp:
        # RFC 2033 §4.2: one reply per accepted recipient.
        return [b"250 ok\r\n"] * max(1, len(client.accepted_recipients))
    return [b"250 ok\r\n"]


def transcribe(events: Sequence[Event]) -> bytes:
    """The bytes a real :class:`~smtpproto.ClientConnection` sends for the
    client *events* (commands, dot-stuffed DATA content, BDAT chunks, SASL
    lines, end of data), as produced by :func:`sessions`.

    The client is told the server offers PIPELINING, SIZE, 8BITMIME,
    CHUNKING, BINARYMIME, SMTPUTF8, DSN and AUTH PLAIN, and every command is
    assumed to succeed (AUTH without an initial response gets an empty 334
    first).  A session with LHLO is sent by an LMTP client.
    Raises ``LocalProtocolError`` for events that are not a valid session.
    """
    lmtp = any(isinstance(event, Lhlo) for event in events)
    client = ClientConnection(ClientConfig(lmtp=lmtp, allow_plaintext_auth=True))
    client.receive_data(b"220 test.example ESMTP\r\n")
    client.next_event()
    out = bytearray()
    for event in events:
        out += client.send(event)
        for reply in _transcript_replies(client, event):
            client.receive_data(reply)
            client.next_event()
    return bytes(out)


# -- mutations -------------------------------------------------------------------

_SPECIAL = [
    b"\r", b"\n", b"\r\n", b"\x00", b".", b"\r\n.", b"\r\n.\r\n", b"\n.\n", b"\r\n.\n", b"\xff"
]


@st.composite
def mutated_bytes(
    draw: st.DrawFn, data: bytes | st.SearchStrategy[bytes], *, max_mutations: int = 4
) -> bytes:
    """*data* (bytes, or a strategy drawing them) after 1 to
    *max_mutations* random edits: flip a bit, insert random octets, delete a
    run, duplicate a run, or insert a line-ending or stuffing trap (CR, LF,
    CRLF, NUL, ``.``, ``CRLF.``, ``CRLF.CRLF``, ``LF.LF``...).  An edit may
    leave the data unchanged (deleting at the end, say).
    """
    base = draw(data) if isinstance(data, st.SearchStrategy) else bytes(data)
    buf = bytearray(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "special"]))
        position = draw(st.integers(0, len(buf)))
        if operation == "flip":
            if buf:
                index = min(position, len(buf) - 1)
                buf[index] ^= 1 << draw(st.integers(0, 7))
        elif operation == "insert":
            buf[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            end = draw(st.integers(position, min(len(buf), position + 8)))
            del buf[position:end]
        elif operation == "duplicate":
            end = draw(st.integers(position, min(len(buf), position + 32)))
            buf[position:position] = buf[position:end]
        else:
            buf[position:position] = draw(st.sampled_from(_SPECIAL))
    return bytes(buf)
