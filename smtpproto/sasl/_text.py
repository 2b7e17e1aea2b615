# Theory of operation
# -------------------
# Text preparation the mechanisms share.
#
# ``saslprep`` is the SASLprep profile (RFC 4013) of stringprep (RFC 3454),
# built on the standard library: ``stringprep`` holds the RFC 3454 tables
# and ``unicodedata.ucd_3_2_0`` the Unicode 3.2 data stringprep is defined
# over (RFC 3454 §1.4; normalising with today's Unicode database would give
# different answers for characters added since).  The four steps run in the
# RFC's order: map, normalise (NFKC), prohibit, check bidirectional text.
# Unassigned code points are refused by default ("stored strings", RFC 3454
# §7); SCRAM prepares user names as "query strings", which allow them.
#
# ``escape_saslname`` / ``unescape_saslname`` are the GS2 and SCRAM
# ``saslname`` encoding (RFC 5801 §4, RFC 5802 §5.1): ``,`` and ``=``
# travel as ``=2C`` and ``=3D``; any other ``=`` is malformed.
# ``split_gs2_header`` reads the GS2 header both SCRAM and OAUTHBEARER open
# with (RFC 5801 §4), for a server.
from __future__ import annotations

import stringprep
import unicodedata
from collections.abc import Callable

from ._base import Malformed, decode_utf8, has_control

__all__ = ["saslprep", "escape_saslname", "unescape_saslname", "split_gs2_header"]

# RFC 4013 §2.3: "SASLprep uses the following tables of prohibited output":
# C.1.2 non-ASCII space, C.2.1 ASCII control, C.2.2 non-ASCII control,
# C.3 private use, C.4 non-character code points, C.5 surrogate codes,
# C.6 inappropriate for plain text, C.7 inappropriate for canonical
# representation, C.8 change display properties or deprecated, C.9 tagging.
_PROHIBITED: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("non-ASCII space", stringprep.in_table_c12),
    ("ASCII control character", stringprep.in_table_c21),
    ("non-ASCII control character", stringprep.in_table_c22),
    ("private use character", stringprep.in_table_c3),
    ("non-character code point", stringprep.in_table_c4),
    ("surrogate code point", stringprep.in_table_c5),
    ("character inappropriate for plain text", stringprep.in_table_c6),
    ("character inappropriate for canonical representation", stringprep.in_table_c7),
    ("display property or deprecated character", stringprep.in_table_c8),
    ("tagging character", stringprep.in_table_c9),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare a user name or password with SASLprep (RFC 4013).

    Raises ``ValueError`` naming the offending character when the string
    holds a prohibited character, breaks the bidirectional rules, or (unless
    *allow_unassigned*) holds a code point unassigned in Unicode 3.2.
    """
    if not isinstance(text, str):
        raise TypeError(f"saslprep() needs a str, not {type(text).__name__}")
    # §2.1 Mapping: non-ASCII space (C.1.2) to SPACE; "commonly mapped to
    # nothing" characters (B.1) to nothing.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    # §2.2 Normalization: Unicode normalization form KC.
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    # §2.3 Prohibited Output, and §2.5 / RFC 3454 §7 Unassigned Code Points.
    for c in prepared:
        for what, table in _PROHIBITED:
            if table(c):
                raise ValueError(f"SASLprep: prohibited {what} U+{ord(c):04X}")
        if not allow_unassigned and stringprep.in_table_a1(c):
            raise ValueError(f"SASLprep: unassigned code point U+{ord(c):04X}")
    # §2.4 Bidirectional Characters (RFC 3454 §6): a string with any
    # RandALCat character has no LCat character, and starts and ends with a
    # RandALCat character.
    if any(stringprep.in_table_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            raise ValueError("SASLprep: right-to-left text mixed with left-to-right text")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("SASLprep: right-to-left text must start and end right-to-left")
    return prepared


def escape_saslname(name: str) -> str:
    """Encode ``=`` and ``,`` as ``=3D`` and ``=2C`` (RFC 5802 §5.1)."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_saslname(text: str) -> str:
    """Decode a ``saslname``; raises ``ValueError`` on a stray ``=`` or NUL.

    RFC 5802 §7: ``saslname = 1*(value-safe-char / "=2C" / "=3D")``, and
    §5.1: "If the server receives a username that contains '=' not followed
    by either '2C' or '3D', then the server MUST fail the authentication."
    """
    if "\0" in text:
        raise ValueError("a saslname must not contain NUL")
    parts = text.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        if part.startswith("2C"):
            out.append("," + part[2:])
        elif part.startswith("3D"):
            out.append("=" + part[2:])
        else:
            raise ValueError("'=' not followed by 2C or 3D in a saslname")
    return "".join(out)


def split_gs2_header(what: str, message: bytes) -> tuple[bytes, str | None, bytes]:
    """Split a client's first message into its GS2 header, the authzid in
    it (``None`` when absent) and the rest; for a server.

    RFC 5802 §7 (and RFC 5801 §4, which OAUTHBEARER uses)::

        gs2-cbind-flag  = ("p=" cb-name) / "n" / "y"
        gs2-header      = gs2-cbind-flag "," [ authzid ] ","
        authzid         = "a=" saslname

    ``n`` (no channel binding) and ``y`` (the client could bind, but thinks
    the server cannot: true, as no ``-PLUS`` mechanism is offered) are
    accepted; ``p=`` asks for channel binding, which these mechanisms do
    not do, and is refused as malformed like any other flag.
    """
    flag, comma, rest = message.partition(b",")
    if not comma:
        raise Malformed(f"{what} message has no GS2 header")
    if flag.startswith(b"p="):
        raise Malformed(f"{what} does not support channel binding (GS2 flag 'p')")
    if flag not in (b"n", b"y"):
        raise Malformed(f"{what} GS2 header has an unknown channel-binding flag")
    authz, comma, rest = rest.partition(b",")
    if not comma:
        raise Malformed(f"{what} GS2 header is not terminated")
    header = message[: len(message) - len(rest)]
    if not authz:
        return header, None, rest
    if not authz.startswith(b"a=") or len(authz) == 2:
        raise Malformed(f"{what} GS2 header has a malformed authzid")
    try:
        authzid = unescape_saslname(decode_utf8(f"{what} authzid", authz[2:]))
    except ValueError as exc:
        raise Malformed(f"{what} authzid: {exc}") from None
    if has_control(authzid):
        raise Malformed(f"{what} authzid contains a control character")
    return header, authzid, rest
