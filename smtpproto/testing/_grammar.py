# Theory of operation
# -------------------
# The grammar values of the Hypothesis strategies: domains, address
# literals, local parts and mailboxes, valid per RFC 5321 §4.1.2-§4.1.3
# (with non-ASCII per RFC 6531 §3.3 when ``utf8=True``) and within the
# §4.5.3.1 length limits, measured in UTF-8 octets; ``invalid_mailboxes``,
# which breaks that grammar one rule at a time; and ESMTP, MAIL and RCPT
# parameters.  ``strategies`` builds the protocol values on top of these
# and re-exports every public name here, so users import them from
# ``smtpproto.testing`` (or ``smtpproto.testing.strategies``) as before.
#
# The alphabets below spell out the RFC's character classes as strings for
# ``sampled_from`` and ``text(alphabet=...)``: no regexes, so generation
# stays fast; the length limits get their own "long" branches, drawn rarely.
from __future__ import annotations

import string
from collections.abc import Sequence

from hypothesis import strategies as st

from .._syntax import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    octets,
    xtext_encode,
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
]

# -- alphabets (RFC 5321 §4.1.2, §4.1.3) ------------------------------------

_LET_DIG = string.ascii_letters + string.digits
_LDH = _LET_DIG + "-"
# atext (RFC 5322 §3.2.3)
_ATEXT = _LET_DIG + "!#$%&'*+-/=?^_`{|}~"
# qtextSMTP = %d32-33 / %d35-91 / %d93-126
_QTEXT = "".join(chr(c) for c in range(32, 127) if c not in (34, 92))
# quoted-pairSMTP = %d92 %d32-126: the escaped character
_QPAIR = "".join(chr(c) for c in range(32, 127))
# dcontent = %d33-90 / %d94-126
_DCONTENT = "".join(chr(c) for c in range(33, 127) if c not in (91, 92, 93))
# esmtp-value = 1*(%d33-60 / %d62-126)
_VALUE = "".join(chr(c) for c in range(33, 127) if c != 61)
# Printable ASCII for free-text arguments (NOOP, VRFY, HELP...).
_PRINTABLE = "".join(chr(c) for c in range(32, 127))

# UTF8-non-ascii (RFC 6531 §3.3).  C1 controls are left out: legal in the
# grammar, but nothing useful to fuzz with and confusing in reports.
_NON_ASCII = st.characters(codec="utf-8", min_codepoint=0xA0)


def _alphabet(ascii_chars: str, utf8: bool) -> st.SearchStrategy[str]:
    chars = st.sampled_from(ascii_chars)
    return st.one_of(chars, _NON_ASCII) if utf8 else chars


def _truncate(text: str, max_octets: int) -> str:
    """Cut *text* (by characters) until it fits in *max_octets* octets."""
    while octets(text) > max_octets:
        text = text[:-1]
    return text


# -- domains and address literals ------------------------------------------


@st.composite
def _label(draw: st.DrawFn, utf8: bool) -> str:
    let_dig = _alphabet(_LET_DIG, utf8)
    first = draw(let_dig)
    if draw(st.integers(0, 3)) == 0:
        return first
    middle = draw(st.text(alphabet=_alphabet(_LDH, utf8), max_size=12))
    last = draw(let_dig)
    # RFC 1035 §2.3.4: 63 octets a label; a U-label's A-label ("xn--" and
    # its Punycode) is what counts, and wide code points make it long.
    while middle and 4 + len((first + middle + last).encode("punycode")) > 63:
        middle = middle[:-1]
    return first + middle + last


@st.composite
def domains(draw: st.DrawFn, *, utf8: bool = False, max_octets: int = MAX_DOMAIN) -> str:
    """Domain names (``Domain = sub-domain *("." sub-domain)``, §4.1.2).

    Labels are letter-digit-hyphen strings that start and end with a letter
    or digit; with ``utf8=True`` they may hold non-ASCII characters
    (U-labels, RFC 6531 §3.3).  The name is at most *max_octets* octets of
    UTF-8 (255 by default, §4.5.3.1.2); one draw in ten builds a long name of
    63-character labels to probe that limit.
    """
    if draw(st.integers(0, 9)) == 0:
        label = st.text(alphabet=_LET_DIG, min_size=63, max_size=63)
        labels = draw(st.lists(label, min_size=1, max_size=5))
    else:
        labels = draw(st.lists(_label(utf8), min_size=1, max_size=4))
    while len(labels) > 1 and octets(".".join(labels)) > max_octets:
        labels.pop()
    if octets(labels[0]) > max_octets:
        # A single label over the budget: cut it, keeping a let-dig last.
        labels[0] = _truncate(labels[0], max_octets).rstrip("-") or "a"
    return ".".join(labels)


def _ipv4(octet_values: Sequence[int], widths: Sequence[int]) -> str:
    return ".".join(
        str(value).zfill(max(width, len(str(value))))
        for value, width in zip(octet_values, widths)
    )


_IPV4_TEXT = st.builds(
    _ipv4,
    st.lists(st.integers(0, 255), min_size=4, max_size=4),
    # Snum = 1*3DIGIT: leading zeros are allowed by the grammar.
    st.lists(st.sampled_from([1, 1, 1, 2, 3]), min_size=4, max_size=4),
)


@st.composite
def _ipv6_literal(draw: st.DrawFn) -> str:
    address = draw(st.ip_addresses(v=6))
    form = draw(st.sampled_from(["compressed", "exploded", "mapped"]))
    if form == "compressed":
        text = str(address)  # runs of one zero group are never "::" here
    elif form == "exploded":
        text = address.exploded
    else:
        # IPv6v4-comp; no leading zeros here (RFC 4291 text forms).
        parts = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        text = "::ffff:" + ".".join(map(str, parts))
    tag = draw(st.sampled_from(["IPv6", "IPv6", "ipv6", "IPV6"]))
    return f"[{tag}:{text}]"


@st.composite
def _general_literal(draw: st.DrawFn) -> str:
    tag_body = draw(st.text(alphabet=_LDH, max_size=8))
    tag = tag_body + draw(st.sampled_from(_LET_DIG))
    if tag.upper() == "IPV6":
        tag = "X" + tag
    content = draw(st.text(alphabet=_DCONTENT, min_size=1, max_size=24))
    return f"[{tag}:{content}]"


def address_literals() -> st.SearchStrategy[str]:
    """Address literals (§4.1.3): ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``
    and general ones ``[tag:content]``.

    IPv4 parts are 0-255, sometimes with leading zeros (``Snum =
    1*3DIGIT``); IPv6 addresses come compressed, exploded or IPv4-mapped;
    general literals use a Standardized-tag other than ``IPv6`` and
    ``dcontent`` (%d33-90 / %d94-126), which includes ``"`` and ``>``.
    """
    return st.one_of(
        _IPV4_TEXT.map(lambda text: f"[{text}]"),
        _ipv6_literal(),
        _general_literal(),
    )


# -- local parts and mailboxes ---------------------------------------------


@st.composite
def _dot_strings(draw: st.DrawFn, utf8: bool, max_octets: int) -> str:
    if draw(st.integers(0, 9)) == 0:
        # Near the limit: one long atom.
        atoms = [draw(st.text(alphabet=_ATEXT, min_size=max_octets - 8, max_size=max_octets))]
    else:
        atom = st.text(alphabet=_alphabet(_ATEXT, utf8), min_size=1, max_size=12)
        atoms = draw(st.lists(atom, min_size=1, max_size=4))
    while len(atoms) > 1 and octets(".".join(atoms)) > max_octets:
        atoms.pop()
    return _truncate(atoms[0], max_octets) if len(atoms) == 1 else ".".join(atoms)


@st.composite
def _quoted_strings(draw: st.DrawFn, utf8: bool, max_octets: int) -> str:
    unit = st.one_of(
        _alphabet(_QTEXT, utf8),
        st.sampled_from(_QPAIR).map(lambda char: "\\" + char),
    )
    units = draw(st.lists(unit, max_size=16))
    while octets("".join(units)) + 2 > max_octets:
        units.pop()
    return '"' + "".join(units) + '"'


def local_parts(*, utf8: bool = False, max_octets: int = MAX_LOCAL_PART) -> st.SearchStrategy[str]:
    """Local parts (§4.1.2): dot-strings (``a.b+c``) and quoted strings
    (``"a b\\"c"``), at most *max_octets* octets of UTF-8 (64 by default,
    §4.5.3.1.1).

    Quoted strings use qtextSMTP and quoted-pairSMTP, so they may hold
    spaces, ``@``, ``<``, ``>`` and escaped quotes.  With ``utf8=True``
    atext and qtext also draw non-ASCII characters (RFC 6531 §3.3).
    """
    return st.one_of(_dot_strings(utf8, max_octets), _quoted_strings(utf8, max_octets))


@st.composite
def mailboxes(draw: st.DrawFn, *, utf8: bool = False) -> str:
    """Mailboxes ``Local-part "@" ( Domain / address-literal )`` (§4.1.2).

    Within every §4.5.3.1 limit: local part 64 octets, domain 255, and the
    whole path ``<mailbox>`` 256 octets.  ``utf8=True`` allows non-ASCII in
    the local part and domain (which then needs SMTPUTF8 on the wire).
    """
    local = draw(local_parts(utf8=utf8))
    # Path = "<" Mailbox ">": the mailbox gets MAX_PATH - 2 octets.
    budget = min(MAX_DOMAIN, MAX_PATH - 2 - octets(local) - 1)
    domain = draw(st.one_of(domains(utf8=utf8, max_octets=budget), address_literals()))
    return f"{local}@{domain}"


_CONTROLS = [chr(c) for c in range(0, 32)] + ["\x7f"]

_BAD_IPV6 = [
    "1:2:3:4:5:6:7:8:9",
    "1::2::3",
    ":::",
    "12345::",
    "g::1",
    "::1%eth0",
    "1:2:3:4:5:6:7",
    "1.2.3.4",
    "",
    "::ffff:256.1.1.1",
    "1:2:3:4:5:6::1.2.3.4",
]


@st.composite
def invalid_mailboxes(draw: st.DrawFn) -> str:
    """Strings that break the mailbox grammar of §4.1.2 or its §4.5.3.1
    limits, one rule at a time.

    Kinds: no ``@``; empty local part or domain; leading, trailing or
    doubled dots; unbalanced or misplaced quotes; a dangling backslash;
    control characters (CR, LF, NUL among them) or spaces outside quotes;
    bad domain labels (leading or trailing hyphen, empty label,
    underscore); local part over 64 octets, domain over 255, whole path
    over 256; IPv4 literals out of range or with the wrong number of parts;
    malformed IPv6 literals; malformed general literals.  Every one is
    refused by ``parse_reverse_path("<" + mailbox + ">")``; all but the
    over-long path are refused by ``parse_mailbox`` too.
    """
    atom = st.text(alphabet=_ATEXT, min_size=1, max_size=8)
    local = draw(atom)
    domain = draw(domains(max_octets=60))
    kind = draw(
        st.sampled_from(
            [
                "no-at",
                "empty-local",
                "empty-domain",
                "leading-dot",
                "trailing-dot",
                "double-dot",
                "unbalanced-quote",
                "misplaced-quote",
                "dangling-backslash",
                "control-in-local",
                "control-in-quotes",
                "control-in-domain",
                "space-in-local",
                "bad-label",
                "long-local",
                "long-domain",
                "long-path",
                "ipv4-range",
                "ipv4-parts",
                "ipv6",
                "bad-literal",
            ]
        )
    )
    if kind == "no-at":
        text = f"{local}.{domain}"
        return text if text.lower() != "postmaster" else text + ".x"
    if kind == "empty-local":
        return f"@{domain}"
    if kind == "empty-domain":
        return f"{local}@"
    if kind == "leading-dot":
        return f".{local}@{domain}"
    if kind == "trailing-dot":
        return f"{local}.@{domain}"
    if kind == "double-dot":
        return f"{local}..{draw(atom)}@{domain}"
    if kind == "unbalanced-quote":
        body = draw(st.text(alphabet=_QTEXT.replace("@", ""), max_size=8))
        return draw(st.sampled_from([f'"{body}@{domain}', f'{local}"@{domain}']))
    if kind == "misplaced-quote":
        return draw(
            st.sampled_from([f'{local}"x"@{domain}', f'"{local}"x@{domain}', f'"a"."b"@{domain}'])
        )
    if kind == "dangling-backslash":
        return draw(st.sampled_from([f'"{local}\\"@{domain}', f"{local}\\@{domain}"]))
    if kind in ("control-in-local", "control-in-quotes", "control-in-domain"):
        control = draw(st.sampled_from(_CONTROLS))
        if kind == "control-in-domain":
            at = draw(st.integers(0, len(domain)))
            return f"{local}@{domain[:at]}{control}{domain[at:]}"
        at = draw(st.integers(0, len(local)))
        inner = f"{local[:at]}{control}{local[at:]}"
        return f"{inner}@{domain}" if kind == "control-in-local" else f'"{inner}"@{domain}'
    if kind == "space-in-local":
        return f"{local} {draw(atom)}@{domain}"
    if kind == "bad-label":
        label = draw(st.sampled_from(["-a", "a-", "a_b", "", "a b", "a!b", "-"]))
        return f"{local}@{domain}.{label}" if label else f"{local}@{domain}..x"
    if kind == "long-local":
        size = draw(st.integers(MAX_LOCAL_PART + 1, MAX_LOCAL_PART + 40))
        return f"{'a' * size}@{domain}"
    if kind == "long-domain":
        labels = draw(st.integers(5, 8))
        return f"{local}@" + ".".join(["d" * 63] * labels)
    if kind == "long-path":
        # Local part and domain each within their limits, the path not.
        long_domain = ".".join(["d" * 63] * 3) + "." + "e" * 61  # 252 octets
        return f"{'l' * draw(st.integers(4, MAX_LOCAL_PART))}@{long_domain}"
    if kind == "ipv4-range":
        parts = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        parts[draw(st.integers(0, 3))] = draw(st.integers(256, 999))
        return f"{local}@[{'.'.join(map(str, parts))}]"
    if kind == "ipv4-parts":
        count = draw(st.sampled_from([1, 2, 3, 5, 6]))
        parts = draw(st.lists(st.integers(0, 255), min_size=count, max_size=count))
        text = ".".join(map(str, parts))
        return draw(st.sampled_from([f"{local}@[{text}]", f"{local}@[1234.{text}]"]))
    if kind == "ipv6":
        return f"{local}@[IPv6:{draw(st.sampled_from(_BAD_IPV6))}]"
    # bad-literal
    return draw(
        st.sampled_from(
            [
                f"{local}@[]",
                f"{local}@[1.2.3.4",
                f"{local}@1.2.3.4]",
                f"{local}@[x-:y]",
                f"{local}@[:y]",
                f"{local}@[x:]",
                f"{local}@[x:a\\b]",
                f"{local}@[x:a[b]",
                f"{local}@[x:a b]",
                f"{local}@[x:\u00e9]",
            ]
        )
    )


# -- parameters --------------------------------------------------------------


@st.composite
def esmtp_parameters(draw: st.DrawFn, *, max_size: int = 4) -> dict[str, str | None]:
    """Syntactically valid MAIL/RCPT parameters (§4.1.2).

    ``esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")`` mapped to an
    ``esmtp-value`` (%d33-60 / %d62-126) or ``None`` for a bare keyword.
    Keywords are unique case-insensitively and come in mixed case.  They
    are not necessarily parameters any server implements: a server core
    answers the unknown ones with 555 (§4.1.1.11).
    """
    keyword = st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(_LET_DIG),
        st.text(alphabet=_LDH, max_size=10),
    )
    value = st.one_of(st.none(), st.text(alphabet=_VALUE, min_size=1, max_size=20))
    items = draw(st.lists(st.tuples(keyword, value), max_size=max_size))
    params: dict[str, str | None] = {}
    seen: set[str] = set()
    for key, val in items:
        if key.upper() not in seen:
            seen.add(key.upper())
            params[key] = val
    return params


def _maybe_lower(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([key, key, key.lower()])


@st.composite
def mail_parameters(
    draw: st.DrawFn, *, max_size: int = 0, smtputf8: bool | None = None
) -> dict[str, str | None]:
    """MAIL parameters of the extensions smtpproto implements, with valid
    values: ``SIZE=n`` (at most *max_size* when given, RFC 1870),
    ``BODY=7BIT|8BITMIME`` (RFC 6152), ``SMTPUTF8`` (RFC 6531),
    ``RET=FULL|HDRS`` and ``ENVID=xtext`` (RFC 3461).

    ``smtputf8=True`` always includes SMTPUTF8, ``False`` never does,
    ``None`` sometimes does.  A server offering those extensions accepts
    every result.
    """
    params: dict[str, str | None] = {}
    if draw(st.booleans()):
        limit = max_size if max_size > 0 else 10**9
        params[draw(_maybe_lower("SIZE"))] = str(draw(st.integers(0, limit)))
    if draw(st.booleans()):
        params[draw(_maybe_lower("BODY"))] = draw(st.sampled_from(["7BIT", "8BITMIME", "8bitmime"]))
    if smtputf8 or (smtputf8 is None and draw(st.booleans())):
        params[draw(_maybe_lower("SMTPUTF8"))] = None
    if draw(st.booleans()):
        params[draw(_maybe_lower("RET"))] = draw(st.sampled_from(["FULL", "HDRS", "hdrs"]))
    if draw(st.booleans()):
        envid = draw(st.text(alphabet=_QPAIR[1:], min_size=1, max_size=30))
        params[draw(_maybe_lower("ENVID"))] = xtext_encode(envid)
    return params


@st.composite
def rcpt_parameters(draw: st.DrawFn) -> dict[str, str | None]:
    """RCPT parameters of the DSN extension (RFC 3461) with valid values:
    ``NOTIFY=NEVER`` or a list of SUCCESS, FAILURE, DELAY, and
    ``ORCPT=addr-type;xtext``."""
    params: dict[str, str | None] = {}
    if draw(st.booleans()):
        notify = draw(
            st.one_of(
                st.just(["NEVER"]),
                st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1, unique=True),
            )
        )
        params[draw(_maybe_lower("NOTIFY"))] = ",".join(notify)
    if draw(st.booleans()):
        address = draw(st.text(alphabet=_ATEXT, min_size=1, max_size=20)) + "@example.org"
        kind = draw(st.sampled_from(["rfc822", "RFC822", "utf-8"]))
        params[draw(_maybe_lower("ORCPT"))] = f"{kind};{xtext_encode(address)}"
    return params
