# Theory of operation
# -------------------
# The RFC 5321 grammar (§4.1.2 and §4.1.3) as compiled regular expressions,
# plus the few rules a regex cannot say (number ranges, octet lengths from
# §4.5.3.1, IPv6 literals checked with the ``ipaddress`` module).
#
# Everything here works on ``str`` decoded from UTF-8: the grammar is the one
# extended by RFC 6531 §3.3 (SMTPUTF8), where atext, qtext, domain labels and
# esmtp-value may also hold non-ASCII characters.  Whether non-ASCII is
# *allowed* in a given transaction is a policy question answered by the
# connection (553 5.6.7 without SMTPUTF8), not by the grammar.
#
# A message that shows a value shows it through ``quoted``: ``ascii()``
# escapes and at most ``QUOTE_LIMIT`` characters, because the server puts
# these messages into reply lines, which hold only %d9 / %d32-126 (§4.2.1)
# and at most 512 octets (§4.5.3.1.5).
#
# Failures raise :class:`GrammarError`, a ``ValueError`` that carries the
# reply code and enhanced status code a server should answer with.  The
# event constructors turn it into a ``LocalProtocolError``; the server turns
# it into a ``CommandRejected`` event.  Nothing here imports the rest of the
# package, so every layer can use it.
from __future__ import annotations

import ipaddress
import re

__all__ = [
    "GrammarError",
    "check_text",
    "is_ascii",
    "parse_domain_or_literal",
    "parse_mailbox",
    "parse_reverse_path",
    "parse_forward_path",
    "parse_parameters",
    "validate_keyword",
    "validate_param_value",
    "xtext_encode",
    "xtext_decode",
    "quoted",
    "MAX_LOCAL_PART",
    "MAX_DOMAIN",
    "MAX_LABEL",
    "MAX_PATH",
    "MAX_REPLY_LINE",
    "QUOTE_LIMIT",
]

# RFC 5321 §4.5.3.1.1-3: "The maximum total length of a user name or other
# local-part is 64 octets." / "... of a domain name or number is 255 octets."
# / "... of a reverse-path or forward-path is 256 octets (including the
# punctuation and element separators)."
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
# RFC 1035 §2.3.4: "labels 63 octets or less", which RFC 5321 §4.1.2 takes
# over for the sub-domains of a Domain; for a U-label (RFC 6531 §3.3) the
# limit applies to its A-label (RFC 5890 §2.3.2.1).
MAX_LABEL = 63
# RFC 5321 §4.5.3.1.5: "The maximum total length of a reply line including
# the reply code and the <CRLF> is 512 octets."
MAX_REPLY_LINE = 512
#: Characters of a value that ``quoted`` shows before it clips the rest.
QUOTE_LIMIT = 64


class GrammarError(ValueError):
    """A string does not match the RFC 5321 grammar.

    ``code`` and ``enhanced`` are what a server answers (501 and a 5.x.x
    detail by default); the message names what is wrong.
    """

    def __init__(
        self, message: str, code: int = 501, enhanced: str = "5.5.4", *, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.enhanced = enhanced
        #: True when the session cannot go on (a BDAT size that cannot be
        #: read leaves the stream impossible to resynchronise).
        self.fatal = fatal


# UTF8-non-ascii: any non-ASCII character that UTF-8 can encode (a lone
# surrogate cannot go on the wire).
_NON_ASCII = r"[^\x00-\x7f\ud800-\udfff]"
# Let-dig = ALPHA / DIGIT ; Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
# sub-domain = Let-dig [Ldh-str] ; RFC 6531 §3.3: sub-domain =/ U-label
_LET_DIG = rf"(?:[A-Za-z0-9]|{_NON_ASCII})"
_SUB_DOMAIN = rf"{_LET_DIG}(?:(?:[A-Za-z0-9-]|{_NON_ASCII})*{_LET_DIG})?"
# Domain = sub-domain *("." sub-domain)
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_DOMAIN_RE = re.compile(_DOMAIN)
# atext from RFC 5322 §3.2.3, extended by RFC 6531 §3.3 with UTF8-non-ascii.
_ATEXT = rf"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~]|{_NON_ASCII})"
# Dot-string = Atom *("."  Atom) ; Atom = 1*atext
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# Quoted-string = DQUOTE *QcontentSMTP DQUOTE
# qtextSMTP = %d32-33 / %d35-91 / %d93-126 ; quoted-pairSMTP = %d92 %d32-126
_QUOTED_STRING = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|{_NON_ASCII}|\\[\x20-\x7e])*"'
_LOCAL_PART_RE = re.compile(rf"{_DOT_STRING}|{_QUOTED_STRING}")
# IPv4-address-literal = Snum 3("."  Snum) ; Snum = 1*3DIGIT (0-255)
# (DIGIT is %x30-39: ``\d`` would also take any Unicode digit.)
_IPV4_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
# General-address-literal = Standardized-tag ":" 1*dcontent
# Standardized-tag = Ldh-str ; dcontent = %d33-90 / %d94-126
_GENERAL_RE = re.compile(r"([A-Za-z0-9-]*[A-Za-z0-9]):([\x21-\x5a\x5e-\x7e]+)")
# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# esmtp-value = 1*(%d33-60 / %d62-126) ; RFC 6531 §3.3 adds UTF8-non-ascii
_VALUE_RE = re.compile(rf"(?:[\x21-\x3c\x3e-\x7e]|{_NON_ASCII})+")
# RFC 3461 §4: xtext = *( xchar / hexchar ); xchar is "!".."~" but "+" and "=";
# hexchar = "+" 2(%x30-39 / %x41-46)
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEXCHAR_RE = re.compile(r"\+([0-9A-F]{2})")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


def quoted(value: str | None, limit: int = QUOTE_LIMIT) -> str:
    """*value* as an error message that may become a reply text shows it.

    ``ascii()`` form: quotes, and escapes for everything outside printable
    ASCII, so the message stays within RFC 5321 §4.2.1's textstring
    (%d9 / %d32-126) whatever the peer sent.  At most *limit* characters of
    the escaped form are shown and ``...`` marks a clipped value, so the
    reply line stays within 512 octets (§4.5.3.1.5).  ``None`` (a
    parameter given without a value) shows as ``(no value)``.
    """
    if value is None:
        return "(no value)"
    head = value[:limit]
    shown = ascii(head)
    while len(shown) > limit + 2:
        # Escapes made it longer: each character is at most 10 escaped ones.
        head = head[: len(head) - max(1, (len(shown) - limit - 2) // 10)]
        shown = ascii(head)
    return shown if len(head) == len(value) else f"{shown}..."


def octets(text: str) -> int:
    """Length of *text* in octets once encoded as UTF-8."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def is_ascii(text: str) -> bool:
    """True when *text* holds only ASCII characters."""
    return text.isascii()


def check_text(what: str, text: str) -> None:
    """Refuse CR, LF and NUL, which would let a caller inject commands.

    RFC 5321 §2.3.8: CR and LF only ever appear together, as the line end;
    ``../PROTOCOL.md`` attack class 4 (command injection from the caller).
    """
    found = _FORBIDDEN.search(text)
    if found is not None:
        raise GrammarError(f"{what} contains the forbidden character {found.group()!r}")


def parse_domain_or_literal(text: str) -> str:
    """Validate a ``Domain`` or ``address-literal`` (§4.1.2, §4.1.3).

    Returns *text* unchanged when it is valid, raises :class:`GrammarError`
    otherwise.
    """
    if text.startswith("["):
        _check_address_literal(text)
    elif _DOMAIN_RE.fullmatch(text) is None:
        raise GrammarError(f"invalid domain {quoted(text)}", 501, "5.5.4")
    elif len(text) > MAX_LABEL or not text.isascii():
        _check_labels(text)
    if octets(text) > MAX_DOMAIN:
        raise GrammarError(f"domain longer than {MAX_DOMAIN} octets", 501, "5.5.4")
    return text


def _check_labels(domain: str) -> None:
    """Refuse a label of more than ``MAX_LABEL`` octets (RFC 1035 §2.3.4).

    An ASCII label counts its characters; a U-label (RFC 6531 §3.3) counts
    the octets of its A-label, ``xn--`` and the Punycode (RFC 3492) of the
    label, which is what the DNS will hold (RFC 5890 §2.3.2.1).
    """
    for label in domain.split("."):
        size = len(label) if label.isascii() else 4 + len(label.encode("punycode"))
        if size > MAX_LABEL:
            raise GrammarError(
                f"domain label {quoted(label)} longer than {MAX_LABEL} octets", 501, "5.5.4"
            )


def _check_address_literal(text: str) -> None:
    # address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
    #                         General-address-literal ) "]"
    if not text.endswith("]") or len(text) < 3:
        raise GrammarError(f"invalid address literal {quoted(text)}", 501, "5.5.4")
    inner = text[1:-1]
    ipv4 = _IPV4_RE.fullmatch(inner)
    if ipv4 is not None:
        if any(int(part) > 255 for part in ipv4.groups()):
            raise GrammarError(f"IPv4 address literal out of range {quoted(text)}", 501, "5.5.4")
        return
    general = _GENERAL_RE.fullmatch(inner)
    if general is None:
        raise GrammarError(f"invalid address literal {quoted(text)}", 501, "5.5.4")
    if general.group(1).upper() == "IPV6":
        # IPv6-address-literal = "IPv6:" IPv6-addr (RFC 4291 text forms; no
        # zone index, which ipaddress would otherwise accept after "%").
        address = general.group(2)
        try:
            if "%" in address:
                raise ValueError(address)
            ipaddress.IPv6Address(address)
            if "::" in address:
                # IPv6-comp / IPv6v4-comp: 'The "::" represents at least 2
                # 16-bit groups of zeros', so at most 6 groups besides it
                # (an IPv4 tail counts as two).
                groups = [g for g in address.replace("::", ":").split(":") if g]
                explicit = len(groups) + (1 if "." in address else 0)
                if explicit > 6:
                    raise ValueError(address)
        except ValueError:
            raise GrammarError(f"invalid IPv6 address literal {quoted(text)}", 501, "5.5.4") from None


def parse_mailbox(text: str) -> str:
    """Validate ``Mailbox = Local-part "@" ( Domain / address-literal )``.

    The local part keeps its case (§2.4: it is the recipient host's to
    interpret).  Returns *text* unchanged; raises :class:`GrammarError`.
    """
    # dcontent may hold "@" ("[tag:a@b]") but never "[", so the "@" before a
    # literal is the last "@["; a domain name holds no "@" at all.
    at = text.rfind("@[") if text.endswith("]") else -1
    if at < 0:
        at = text.rfind("@")
    if at <= 0:
        raise GrammarError(f"mailbox {quoted(text)} has no local part and domain", 501, "5.1.3")
    local, domain = text[:at], text[at + 1 :]
    if _LOCAL_PART_RE.fullmatch(local) is None:
        raise GrammarError(f"invalid local part {quoted(local)}", 501, "5.1.3")
    if octets(local) > MAX_LOCAL_PART:
        raise GrammarError(f"local part longer than {MAX_LOCAL_PART} octets", 501, "5.1.3")
    try:
        parse_domain_or_literal(domain)
    except GrammarError as exc:
        raise GrammarError(str(exc), 501, "5.1.3") from None
    return text


def _strip_path(text: str, lenient: bool) -> str:
    """Return the mailbox inside ``Path = "<" [ A-d-l ":" ] Mailbox ">"``.

    A source route (A-d-l) is checked and dropped, as §4.1.1.3 and
    Appendix C allow.  In lenient mode a path without angle brackets is
    taken as a bare mailbox, a deviation common among old clients.
    """
    if octets(text) > MAX_PATH:
        raise GrammarError(f"path longer than {MAX_PATH} octets", 501, "5.1.3")
    if not (text.startswith("<") and text.endswith(">")):
        if lenient and text and "<" not in text and ">" not in text:
            return text
        raise GrammarError(f"path {quoted(text)} is not enclosed in angle brackets", 501, "5.5.4")
    inner = text[1:-1]
    if inner.startswith("@"):
        # A-d-l = At-domain *( "," At-domain ) ; At-domain = "@" Domain
        route, colon, mailbox = inner.partition(":")
        if not colon or not mailbox:
            # A route to no mailbox (``<@a:>``) is not the null path ``<>``.
            raise GrammarError(f"source route without ':' or mailbox in {quoted(text)}", 501, "5.1.3")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise GrammarError(f"invalid source route in {quoted(text)}", 501, "5.1.3")
            try:
                parse_domain_or_literal(hop[1:])
            except GrammarError:
                raise GrammarError(f"invalid source route in {quoted(text)}", 501, "5.1.3") from None
        return mailbox
    return inner


def parse_reverse_path(text: str, *, lenient: bool = False) -> str:
    """Parse ``Reverse-path = Path / "<>"`` and return the mailbox.

    The null reverse-path ``<>`` is returned as ``""``.
    """
    mailbox = _strip_path(text, lenient)
    if mailbox == "":
        return ""
    return parse_mailbox(mailbox)


def parse_forward_path(text: str, *, lenient: bool = False) -> str:
    """Parse ``Forward-path = Path`` and return the mailbox.

    ``<Postmaster>`` (any case) is accepted on its own, as §4.1.1.3 requires.
    """
    mailbox = _strip_path(text, lenient)
    if mailbox.lower() == "postmaster":
        return mailbox
    return parse_mailbox(mailbox)


def validate_keyword(keyword: str) -> str:
    """Check ``esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")``."""
    if _KEYWORD_RE.fullmatch(keyword) is None:
        raise GrammarError(f"invalid parameter keyword {quoted(keyword)}", 501, "5.5.4")
    return keyword


def validate_param_value(keyword: str, value: str) -> str:
    """Check ``esmtp-value = 1*(%d33-60 / %d62-126)`` (plus UTF-8, RFC 6531)."""
    if _VALUE_RE.fullmatch(value) is None:
        raise GrammarError(f"invalid value {quoted(value)} for parameter {quoted(keyword)}", 501, "5.5.4")
    return value


def parse_parameters(text: str) -> dict[str, str | None]:
    """Parse ``Mail-parameters = esmtp-param *(SP esmtp-param)``.

    Keywords are upper-cased (they are case-insensitive); a keyword given
    twice is an error.  ``esmtp-param = esmtp-keyword ["=" esmtp-value]``:
    a keyword without ``=`` maps to ``None``.
    """
    params: dict[str, str | None] = {}
    if text == "":
        return params
    for item in text.split(" "):
        keyword, equals, value = item.partition("=")
        validate_keyword(keyword)
        key = keyword.upper()
        if key in params:
            raise GrammarError(f"parameter {key} given more than once", 501, "5.5.4")
        if equals:
            params[key] = validate_param_value(key, value)
        else:
            params[key] = None
    return params


def xtext_encode(text: str) -> str:
    """Encode *text* as RFC 3461 §4 xtext (``+XX`` for ``+``, ``=`` and
    octets outside 33-126)."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 §4 xtext; raises :class:`GrammarError` when malformed
    or when it decodes to control characters (attack class 5)."""
    if _XTEXT_RE.fullmatch(text) is None:
        raise GrammarError(f"invalid xtext {quoted(text)}", 501, "5.5.4")
    raw = _HEXCHAR_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        decoded = raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise GrammarError(f"xtext {quoted(text)} is not UTF-8", 501, "5.5.4") from None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in decoded):
        raise GrammarError(f"xtext {quoted(text)} decodes to control characters", 501, "5.5.4")
    return decoded
