# Theory of operation
# -------------------
# Command lines <-> command events.  ``format_command`` is the client's
# half: the event's verb and argument, a space between them, CRLF after.
# ``parse_command`` is the server's half, and the place where every rule
# about the *shape* of a command line lives (RFC 5321 §4.1.1, §4.1.2):
#
# * the verb is case-insensitive (§2.4) and separated from its argument by
#   one SP; ``MAIL FROM:`` and ``RCPT TO:`` take no space around the colon
#   (§3.3: "no spaces are permitted on either side of the colon");
# * DATA, RSET and QUIT take no argument (501 otherwise);
# * paths and parameters follow the grammar in ``_syntax``.
#
# Lenient mode accepts the deviations real clients make: a space after the
# colon, a path without angle brackets, runs of spaces, trailing white
# space, and any word as the EHLO/HELO name.  Rules that protect the
# server (control characters, UTF-8 validity, lengths) hold in both modes.
#
# Failures raise ``GrammarError`` carrying the reply the server should
# give; unknown verbs become ``UnknownCommand`` for the application.
#
# ``parse_common`` is the server's fast path for the commands of every
# transaction: DATA, RSET, QUIT, NOOP and HELP without an argument, and
# MAIL/RCPT with an ASCII dot-string mailbox (or ``<>``) and printable
# ASCII parameters.  One regular expression on the raw bytes recognises a
# line the full parser would accept as it stands, and the event is built
# from the match; anything else (a quoted local part, an address literal,
# UTF-8, a control character, a length over a limit, a bad parameter)
# gives None and goes through ``parse_command``, which is the reference:
# the fast path accepts a subset of it and builds equal events (the tests
# check this on generated lines).
from __future__ import annotations

import base64
import re
from collections.abc import Callable
from types import MappingProxyType

from ._events import (
    _EMPTY_PARAMS,
    _mail,
    _rcpt,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    UnknownCommand,
    Vrfy,
)
from ._esmtp_events import (
    SASL_NAME_RE,
    XCLIENT_ATTRIBUTES,
    Auth,
    Bdat,
    Lhlo,
    StartTLS,
    Xclient,
)
from ._syntax import (
    GrammarError,
    xtext_decode,
    parse_domain_or_literal,
    parse_forward_path,
    parse_parameters,
    parse_reverse_path,
    quoted,
    MAX_LABEL,
    MAX_LOCAL_PART,
)

__all__ = ["format_command", "parse_command", "parse_common", "split_verb", "decode_sasl"]

# Control characters other than the line end never belong in a command line
# (attack class 5: a bare CR inside a command, NUL, escape sequences).
_CONTROL_RE = re.compile(rb"[\x00-\x1f\x7f]")
_VERB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def format_command(command: Command) -> bytes:
    """The wire form of *command*: verb, SP and argument, CRLF."""
    verb = command.name if isinstance(command, UnknownCommand) else command.verb
    argument = command._argument()
    line = f"{verb} {argument}\r\n" if argument else f"{verb}\r\n"
    return line.encode("utf-8")


def split_verb(line: bytes) -> tuple[str, bytes]:
    """Split a command line into its upper-cased verb and raw argument."""
    verb, _, argument = line.partition(b" ")
    return verb.decode("ascii", "replace").upper(), argument


def _split_path(text: str) -> tuple[str, str]:
    """Split ``<path> params`` at the ``>`` that closes the path.

    Quoted local parts may hold ``>`` and escaped quotes, and address
    literals may hold ``>`` and ``"`` (dcontent, §4.1.3), so the scan follows
    quoting and brackets rather than looking for the first ``>``.
    """
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest
    if '"' not in text and "[" not in text:
        # No quoted local part and no address literal (the usual case): the
        # first ">" closes the path, and no per-character walk is needed.
        index = text.find(">")
        if index >= 0:
            return _close_path(text, index)
        raise GrammarError("path is not closed with '>'", 501, "5.5.4")
    quoted = escaped = literal = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif literal:
            literal = char != "]"
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "[" and not quoted:
            literal = True
        elif char == ">" and not quoted:
            return _close_path(text, index)
    raise GrammarError("path is not closed with '>'", 501, "5.5.4")


def _close_path(text: str, index: int) -> tuple[str, str]:
    """Split *text* after the ``>`` at *index*, which must end the text or
    be followed by a space and the parameters."""
    rest = text[index + 1 :]
    if rest and not rest.startswith(" "):
        raise GrammarError(f"garbage after path: {quoted(rest)}", 501, "5.5.4")
    return text[: index + 1], rest[1:]


def _path_and_params(argument: str, prefix: str, lenient: bool) -> tuple[str, str]:
    if argument[: len(prefix)].upper() != prefix:
        raise GrammarError(f"syntax: expected {prefix}<address>", 501, "5.5.4")
    rest = argument[len(prefix) :]
    if lenient:
        rest = rest.lstrip(" ")
    path, params = _split_path(rest)
    if lenient:
        # Collapse runs of spaces between parameters only: spaces inside a
        # quoted local part are part of the mailbox, and non-ASCII white
        # space may be part of an esmtp-value (RFC 6531 §3.3).
        params = " ".join(item for item in params.split(" ") if item)
    return path, params


def _parse_mail(argument: str, lenient: bool) -> Command:
    path, params = _path_and_params(argument, "FROM:", lenient)
    try:
        mailbox = parse_reverse_path(path, lenient=lenient)
    except GrammarError as exc:
        raise GrammarError(str(exc), exc.code, "5.1.7") from None
    return Mail._trusted(reverse_path=mailbox, parameters=MappingProxyType(parse_parameters(params)))


def _parse_rcpt(argument: str, lenient: bool) -> Command:
    path, params = _path_and_params(argument, "TO:", lenient)
    mailbox = parse_forward_path(path, lenient=lenient)
    return Rcpt._trusted(forward_path=mailbox, parameters=MappingProxyType(parse_parameters(params)))


def _hello(cls: type[Ehlo] | type[Helo] | type[Lhlo]) -> Callable[[str, bool], Command]:
    def parse(argument: str, lenient: bool) -> Command:
        if lenient:
            argument = argument.strip(" ")
            if not argument or " " in argument:
                raise GrammarError(f"{cls.verb} needs a domain name", 501, "5.5.4")
        else:
            parse_domain_or_literal(argument)
        return cls._trusted(domain=argument)

    return parse


def _no_argument(cls: type[Command]) -> Callable[[str, bool], Command]:
    def parse(argument: str, lenient: bool) -> Command:
        if argument.strip(" ") if lenient else argument:
            raise GrammarError(f"{cls.verb} takes no argument", 501, "5.5.4")
        return cls._trusted()

    return parse


def _required_text(cls: type[Vrfy] | type[Expn]) -> Callable[[str, bool], Command]:
    def parse(argument: str, lenient: bool) -> Command:
        if not argument.strip(" "):
            raise GrammarError(f"{cls.verb} needs an argument", 501, "5.5.4")
        return cls._trusted(text=argument)

    return parse


def decode_sasl(text: str) -> bytes:
    """Decode one base64 SASL message (RFC 4954 §4); ``=`` is empty.

    Strict: padding is required, no character outside the base64 alphabet
    is allowed, and the encoding must be canonical (attack class 6:
    unpadded or invalid base64).
    """
    if text == "=":
        return b""
    try:
        raw = text.encode("ascii")
        data = base64.b64decode(raw, validate=True)
    except (ValueError, UnicodeEncodeError):
        data = None
    # The decoder ignores excess padding ("QUFB====") and non-zero pad bits
    # ("QUF="); only the canonical encoding (RFC 4648 §3.5) is taken.
    if data is None or base64.b64encode(data) != raw:
        raise GrammarError("invalid base64 in the SASL exchange", 501, "5.5.2")
    return data


def _parse_auth(argument: str, lenient: bool) -> Command:
    # RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]
    words = argument.split(" ")
    if len(words) > 2 or SASL_NAME_RE.fullmatch(words[0]) is None:
        raise GrammarError("syntax: AUTH mechanism [initial-response]", 501, "5.5.4")
    response = decode_sasl(words[1]) if len(words) == 2 else None
    return Auth._trusted(mechanism=words[0].upper(), initial_response=response)


def _parse_bdat(argument: str, lenient: bool) -> Command:
    # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CRLF;
    # chunk-size = 1*DIGIT ; end-marker = "LAST".  A size that cannot be
    # read leaves the octets that follow unknowable: the session must end.
    words = argument.split(" ")
    size, last = words[0], words[1:]
    if not size.isdigit() or not size.isascii() or len(size) > 18:
        raise GrammarError(f"invalid BDAT chunk size {quoted(size, 20)}", 501, "5.5.4", fatal=True)
    if last and [word.upper() for word in last] != ["LAST"]:
        raise GrammarError("syntax: BDAT size [LAST]", 501, "5.5.4", fatal=True)
    return Bdat._trusted(size=int(size), last=bool(last))


def _parse_xclient(argument: str, lenient: bool) -> Command:
    attributes: dict[str, str] = {}
    for item in argument.split(" "):
        name, equals, value = item.partition("=")
        name = name.upper()
        if not equals or name not in XCLIENT_ATTRIBUTES or name in attributes:
            raise GrammarError(f"bad XCLIENT attribute {quoted(item, 40)}", 501, "5.5.4")
        xtext_decode(value)
        attributes[name] = value
    return Xclient._trusted(attributes=MappingProxyType(attributes))


_PARSERS: dict[str, Callable[[str, bool], Command]] = {
    "EHLO": _hello(Ehlo),
    "HELO": _hello(Helo),
    "MAIL": _parse_mail,
    "RCPT": _parse_rcpt,
    "DATA": _no_argument(Data),
    "RSET": _no_argument(Rset),
    "QUIT": _no_argument(Quit),
    "NOOP": lambda argument, lenient: Noop._trusted(text=argument),
    "HELP": lambda argument, lenient: Help._trusted(topic=argument),
    "VRFY": _required_text(Vrfy),
    "EXPN": _required_text(Expn),
    "STARTTLS": _no_argument(StartTLS),
    "AUTH": _parse_auth,
    "BDAT": _parse_bdat,
    "LHLO": _hello(Lhlo),
    "XCLIENT": _parse_xclient,
}


def parse_command(line: bytes, *, lenient: bool = False) -> Command:
    """Parse one command line (without its CRLF) into a command event.

    Raises ``GrammarError`` with the reply to give when the line is bad.
    """
    control = _CONTROL_RE.search(line)
    if control is not None:
        raise GrammarError(
            f"control character {control.group()!r} in command line", 500, "5.5.2"
        )
    raw_verb, space, raw_argument = line.partition(b" ")
    verb = raw_verb.decode("latin-1")
    if _VERB_RE.fullmatch(verb) is None:
        raise GrammarError(f"invalid command verb {quoted(verb, 20)}", 500, "5.5.2")
    verb = verb.upper()
    try:
        argument = raw_argument.decode("utf-8")
    except UnicodeDecodeError:
        raise GrammarError("command argument is not valid UTF-8", 501, "5.5.2") from None
    if lenient:
        argument = argument.rstrip(" ")
        if space:
            argument = argument.lstrip(" ")
    parser = _PARSERS.get(verb)
    if parser is None:
        return UnknownCommand._trusted(name=verb, argument=argument)
    return parser(argument, lenient)


# -- the fast path -------------------------------------------------------

# The argument-less commands, as shared events (events are immutable).
_BARE: dict[bytes, Command] = {
    b"DATA": Data._trusted(),
    b"RSET": Rset._trusted(),
    b"QUIT": Quit._trusted(),
    b"NOOP": Noop._trusted(text=""),
    b"HELP": Help._trusted(topic=""),
}
# The ASCII subset of the grammar in ``_syntax``: Dot-string = Atom *("."
# Atom), atext (RFC 5322 §3.2.3); Domain = sub-domain *("." sub-domain),
# sub-domain = Let-dig [Ldh-str], written as runs of letters and digits
# joined by runs of hyphens; then ``>`` and either nothing or SP and
# printable ASCII parameters (esmtp-param, §4.1.2, is checked by
# ``parse_parameters``).  Every octet allowed is printable ASCII: no
# control character, no UTF-8, no bare LF.  Possessive repeats: nothing
# here needs backtracking, and the engine is spared it.
_ATEXT_B = rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL_B = rb"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
_PATH_RE = re.compile(
    rb"<(?:(" + _ATEXT_B + rb"++(?:\." + _ATEXT_B + rb"++)*+)@(" + _LABEL_B + rb"(?:\." + _LABEL_B
    + rb")*+))?>(?: ([\x20-\x7e]*))?"
)
#: Longest domain the fast path takes: no label of it can then be over the
#: 63 octets of RFC 1035 §2.3.4, which the pattern does not count.
_FAST_DOMAIN = MAX_LABEL


def parse_common(line: bytes, lenient: bool = False) -> Command | None:
    """The command of *line* when it is one of the common commands in its
    plain form, else None (then ask ``parse_command``).

    The event is equal to what ``parse_command(line, lenient=lenient)``
    gives; no ``GrammarError`` is raised.
    """
    verb = line[:4].upper()
    if len(line) == 4:
        return _BARE.get(verb)
    if verb == b"MAIL" and line[4:10].upper() == b" FROM:":
        match = _PATH_RE.fullmatch(line, 10)
        is_mail = True
    elif verb == b"RCPT" and line[4:8].upper() == b" TO:":
        match = _PATH_RE.fullmatch(line, 8)
        is_mail = False
    else:
        return None
    if match is None:
        return None
    local, domain, params = match.groups()
    if local is None:
        if not is_mail:
            return None  # §4.1.1.3: no null forward-path (the full parser says so)
        mailbox = ""
    else:
        # §4.5.3.1.1: a local part of at most 64 octets; with a domain of at
        # most 63, the domain (255) and path (256) limits of §4.5.3.1.2-3
        # hold too.  A longer domain is the full parser's to judge.
        if len(local) > MAX_LOCAL_PART or len(domain) > _FAST_DOMAIN:
            return None
        mailbox = line[match.start(1) : match.end(2)].decode("ascii")
    parameters = _EMPTY_PARAMS
    if params:
        text = params.decode("ascii")
        if lenient:
            text = " ".join(item for item in text.split(" ") if item)
        try:
            parsed = parse_parameters(text)
        except GrammarError:
            return None
        if parsed:
            parameters = MappingProxyType(parsed)
    if is_mail:
        return _mail(mailbox, parameters)
    return _rcpt(mailbox, parameters)
