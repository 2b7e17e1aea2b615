# Theory of operation
# -------------------
# Replies on the wire (RFC 5321 §4.2):
#
#     Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                  Reply-code [ SP textstring ] CRLF
#     Reply-code = %x32-35 %x30-35 %x30-39
#
# ``format_reply`` turns a ``Reply`` event into those bytes, prefixing every
# line with the enhanced status code (RFC 2034 §4: "... each line of a
# multiline reply").  ``ReplyParser`` is the client's half: it takes one line
# at a time (the receive buffer already split and bounded it), checks that
# the code is well formed and the same on every line, counts the lines
# against a bound, and returns a ``Reply`` once the last line arrives.
# Anything malformed is a ``RemoteProtocolError``: a client cannot
# resynchronise with a server whose replies it cannot read.
#
# The bottom of the module is the catalogue of ready replies the server core
# suggests for every protocol error, each with its RFC 3463 enhanced code.
#
# No reply line goes out longer than 512 octets (§4.5.3.1.5).  The core's
# own replies quote the peer through ``_syntax.quoted`` and ``reply_text``
# (ASCII, clipped), so they always fit; ``format_reply`` refuses any other
# reply with a longer line (``LocalProtocolError``, naming the limit): one
# the application built, or relayed after a client core accepted it (a
# client takes lines up to ``ClientConfig.max_reply_line``, because real
# servers exceed 512, and a ``Reply`` stays buildable from what a client
# received, so the bound is checked where replies are sent, not built).
#
# Replies are built once.  The catalogue's wire forms are made at import
# (``preformat``), so sending 250 Sender OK is a dictionary lookup; a
# ``ReplyParser`` remembers the one-line replies it has parsed, so the 250
# to every RCPT of a session is checked and built the first time only.
from __future__ import annotations

import re

from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import Reply
from ._syntax import MAX_REPLY_LINE

__all__ = ["check_enhanced", "format_reply", "reply_text", "ReplyParser"]

# RFC 3463 §2: status-code = class "." subject "." detail
#   class = "2" / "4" / "5" ; subject = 1*3digit ; detail = 1*3digit
#   (re.ASCII: digit is %x30-39, not any Unicode digit)
_ENHANCED_RE = re.compile(r"([245])\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})", re.ASCII)
_LINE_RE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)
_ENHANCED_PREFIX_RE = re.compile(
    r"([245]\.(?:0|[1-9]\d{0,2})\.(?:0|[1-9]\d{0,2}))(?: |$)", re.ASCII
)


def check_enhanced(code: int, enhanced: str) -> None:
    """Check an enhanced status code against RFC 3463 and its reply code.

    RFC 3463 §2: the class "MUST" match the first digit of the reply code.
    """
    match = _ENHANCED_RE.fullmatch(enhanced)
    if match is None:
        raise LocalProtocolError(f"invalid enhanced status code {enhanced!r}")
    if int(match.group(1)) != code // 100:
        raise LocalProtocolError(
            f"enhanced status code {enhanced} does not match the class of reply code {code}"
        )


def format_reply(reply: Reply, *, enhanced_codes: bool = True) -> bytes:
    """Serialise *reply* to wire bytes, one CRLF-terminated line per text line.

    With ``enhanced_codes=False`` the enhanced status code is left out (a
    server that does not offer ENHANCEDSTATUSCODES).  Raises
    ``LocalProtocolError`` when a line would be over 512 octets
    (§4.5.3.1.5).
    """
    wire = _WIRE.get(id(reply))
    if wire is not None:
        return wire[1 if enhanced_codes else 0]
    return _format(reply, enhanced_codes)


def _format(reply: Reply, enhanced_codes: bool) -> bytes:
    code = str(reply.code)
    enhanced = reply.enhanced if enhanced_codes else None
    last = len(reply.text) - 1
    out = []
    for index, text in enumerate(reply.text):
        if enhanced:
            text = f"{enhanced} {text}" if text else enhanced
        if index < last:
            out.append(f"{code}-{text}\r\n")
        elif text or code == "334":
            # RFC 4954 §4: continue-req = "334" SP [base64] CRLF, the space
            # even before an empty challenge.
            out.append(f"{code} {text}\r\n")
        else:
            out.append(f"{code}\r\n")
    wire = "".join(out).encode("utf-8", "surrogateescape")
    if len(wire) > MAX_REPLY_LINE:
        longest = max(map(len, wire.split(b"\r\n")))
        if longest + 2 > MAX_REPLY_LINE:
            raise LocalProtocolError(
                f"reply {code} has a line of {longest + 2} octets (code, enhanced status "
                f"code and CRLF included), over the limit of {MAX_REPLY_LINE} octets "
                "(RFC 5321 §4.5.3.1.5)"
            )
    return wire


def reply_text(text: str) -> str:
    """*text*, a message the core puts into a reply, made fit for one.

    RFC 5321 §4.2.1: ``textstring = 1*(%d09 / %d32-126)``, so non-ASCII
    characters become ``\\x``/``\\u`` escapes; §4.5.3.1.5: a reply line
    is at most 512 octets, so the text is clipped to leave room for the
    code, an enhanced status code and CRLF.  Messages of the core already
    quote the peer through ``_syntax.quoted``; this also covers an
    extension's own message (``ServerConfig.extra_extensions``).
    """
    if not text.isascii():
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 3] + "..."
    return text


#: Longest text ``reply_text`` gives: room for "555-5.999.999 " and CRLF.
_MAX_TEXT = MAX_REPLY_LINE - 32


class ReplyParser:
    """Assemble reply lines into ``Reply`` events (client side).

    ``max_lines`` bounds the lines of one multiline reply (attack class 7,
    reply bombs against a client).  A one-line reply (most are) is checked
    and built without the regular expression, and remembered by its wire
    line, so the next identical one costs a dictionary lookup.
    """

    # The valid reply codes (Reply-code = %x32-35 %x30-35 %x30-39, §4.2) as
    # their three octets, for the one-line fast path of ``feed``.
    _CODES = frozenset(
        b"%d%d%d" % (first, second, third)
        for first in range(2, 6)
        for second in range(6)
        for third in range(10)
    )

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self._code = b""
        self._lines: list[str] = []
        # One-line replies already parsed, by their wire line: a session
        # hears the same few replies again and again (250 for each MAIL and
        # RCPT, 354 for each DATA), and a Reply is immutable.  Bounded: a
        # server sending ever new lines only makes it start over.
        self._seen: dict[bytes, Reply] = {}

    @property
    def in_progress(self) -> bool:
        """True while a multiline reply has started but not ended."""
        return bool(self._lines)

    def feed(self, line: bytes | bytearray) -> Reply | None:
        """Take one line (without its CRLF); return the reply when complete."""
        line = bytes(line)  # no copy for bytes; a bytearray cannot be a key
        if not self._lines:
            seen = self._seen.get(line)
            if seen is not None:
                return seen  # checked and built when first seen
            if line[:3] in self._CODES and line[3:4] in (b" ", b""):
                # A one-line reply (most are): the same checks as below
                # without the regular expression and the list of lines.
                if b"\r" in line or b"\n" in line or b"\x00" in line:
                    raise RemoteProtocolError(f"control character in reply line {line[:80]!r}")
                reply = self._one_line(int(line[:3]), line[4:].decode("utf-8", "surrogateescape"))
                if len(self._seen) >= _SEEN_LIMIT:
                    self._seen.clear()
                self._seen[line] = reply
                return reply
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise RemoteProtocolError(f"malformed reply line {bytes(line[:80])!r}")
        code, separator, raw_text = match.groups()
        if b"\r" in line or b"\n" in line or b"\x00" in line:
            raise RemoteProtocolError(f"control character in reply line {bytes(line[:80])!r}")
        if self._lines and code != self._code:
            raise RemoteProtocolError(
                f"reply code changed from {self._code.decode()} to {code.decode()} "
                "inside a multiline reply"
            )
        self._code = code
        self._lines.append((raw_text or b"").decode("utf-8", "surrogateescape"))
        if separator == b"-":
            if len(self._lines) >= self.max_lines:
                raise RemoteProtocolError(
                    f"multiline reply longer than {self.max_lines} lines"
                )
            return None
        # The last line of a multiline reply (a one-line reply took the
        # fast path above, which remembers it).
        lines, self._lines = self._lines, []
        return _build_reply(int(code), lines)

    @staticmethod
    def _one_line(code: int, text: str) -> Reply:
        """The reply of one line, as ``_build_reply`` makes it, built
        without the general ``Reply._trusted`` (its three fields set
        directly: the parser has checked them all)."""
        enhanced = None
        if text[1:2] == "." and text[:1] in "245" and text[:1] == str(code // 100):
            found = _ENHANCED_PREFIX_RE.match(text)
            if found is not None:
                enhanced = found.group(1)
                text = text[len(enhanced) + 1 :]
        reply = object.__new__(Reply)
        object.__setattr__(reply, "code", code)
        object.__setattr__(reply, "text", (text,))
        object.__setattr__(reply, "enhanced", enhanced)
        return reply


#: How many distinct one-line replies a ``ReplyParser`` remembers.
_SEEN_LIMIT = 64


def _build_reply(code: int, lines: list[str]) -> Reply:
    enhanced = None
    first = _ENHANCED_PREFIX_RE.match(lines[0])
    if first is not None and int(first.group(1)[0]) == code // 100:
        enhanced = first.group(1)
        cut = len(enhanced)
        for index, text in enumerate(lines):
            if text.startswith(enhanced) and text[cut : cut + 1] in ("", " "):
                lines[index] = text[cut + 1 :]
    return Reply._trusted(code=code, text=tuple(lines), enhanced=enhanced)


def _r(code: int, enhanced: str | None, text: str) -> Reply:
    return Reply(code=code, enhanced=enhanced, text=(text,))


# Ready replies.  Codes from RFC 5321 §4.2.2-§4.2.4 and §4.3.2; enhanced
# codes from RFC 3463 and its registry (RFC 5248).
OK = _r(250, "2.0.0", "OK")
SENDER_OK = _r(250, "2.1.0", "Sender OK")
RECIPIENT_OK = _r(250, "2.1.5", "Recipient OK")
START_DATA = _r(354, None, "End data with <CR><LF>.<CR><LF>")
MESSAGE_ACCEPTED = _r(250, "2.0.0", "Message accepted for delivery")
RESET_OK = _r(250, "2.0.0", "Reset OK")
CLOSING = _r(221, "2.0.0", "Bye")
VRFY_CANNOT = _r(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP_TEXT = _r(214, "2.0.0", "See RFC 5321 for the commands of this server")
EXPN_DISABLED = _r(502, "5.5.1", "EXPN not available")
UNRECOGNIZED = _r(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = _r(500, "5.5.2", "Line too long")
BAD_LINE = _r(500, "5.5.2", "Syntax error")
NOT_IMPLEMENTED = _r(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = _r(503, "5.5.1", "Bad sequence of commands")
NEED_EHLO = _r(503, "5.5.1", "Send EHLO or HELO first")
NEED_MAIL = _r(503, "5.5.1", "Need MAIL command first")
NESTED_MAIL = _r(503, "5.5.1", "Nested MAIL command")
NEED_QUIT = _r(503, "5.5.1", "Only QUIT is accepted now")
NO_VALID_RECIPIENTS = _r(554, "5.5.1", "No valid recipients")
TOO_MANY_RECIPIENTS = _r(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = _r(552, "5.3.4", "Message size exceeds fixed maximum message size")
BARE_LINE_ENDING = _r(554, "5.6.0", "Message contains bare CR or LF")
NEEDS_SMTPUTF8 = _r(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
TOO_MANY_ERRORS = _r(421, "4.7.0", "Too many errors, closing connection")
INPUT_OVERFLOW = _r(421, "4.7.0", "Too much unprocessed input, closing connection")
SHUTTING_DOWN = _r(421, "4.3.2", "Service shutting down, closing connection")


def rejection(code: int, enhanced: str, text: str) -> Reply:
    """A one-line reply built from validated parts (no re-validation)."""
    return Reply._trusted(code=code, text=(text,), enhanced=enhanced)


def preformat(reply: Reply) -> Reply:
    """Keep the wire forms of *reply*, a reply that lives as long as the
    program (a module constant), so ``format_reply`` builds it only once.

    The table is keyed by ``id()``; it holds the reply itself too, so that
    id can never be reused by another object.
    """
    _WIRE[id(reply)] = (_format(reply, False), _format(reply, True))
    _KEEP.append(reply)
    return reply


# id(reply) -> (wire form without, with the enhanced status code).
_WIRE: dict[int, tuple[bytes, bytes]] = {}
_KEEP: list[Reply] = []
for _reply in (
    OK, SENDER_OK, RECIPIENT_OK, START_DATA, MESSAGE_ACCEPTED, RESET_OK, CLOSING,
    VRFY_CANNOT, HELP_TEXT, EXPN_DISABLED, UNRECOGNIZED, LINE_TOO_LONG, BAD_LINE,
    NOT_IMPLEMENTED, BAD_SEQUENCE, NEED_EHLO, NEED_MAIL, NESTED_MAIL, NEED_QUIT,
    NO_VALID_RECIPIENTS, TOO_MANY_RECIPIENTS, MESSAGE_TOO_BIG, BARE_LINE_ENDING,
    NEEDS_SMTPUTF8, TOO_MANY_ERRORS, INPUT_OVERFLOW, SHUTTING_DOWN,
):
    preformat(_reply)
