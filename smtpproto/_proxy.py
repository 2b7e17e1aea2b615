# Theory of operation
# -------------------
# The PROXY protocol (HAProxy, "The PROXY protocol", versions 1 and 2): a
# proxy in front of the server sends one header before the SMTP session
# starts, naming the real client's address.  The server core reads it, when
# configured to, before it lets the application send the greeting.
#
# Version 1 is one text line of at most 107 octets:
#     PROXY TCP4|TCP6|UNKNOWN src dst sport dport CRLF
# Version 2 is binary: a 12-octet signature, a version/command octet, a
# family/protocol octet, a 16-bit length, then the addresses (and TLVs,
# which are skipped).  Anything malformed is an error: a server behind a
# proxy must never guess an address, so the session is closed.
from __future__ import annotations

import ipaddress
import struct

from ._esmtp_events import ProxyHeader

__all__ = ["ProxyError", "parse_proxy_header", "V2_SIGNATURE", "MAX_V2_LENGTH"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_V1_MAX = 107
#: Largest v2 address block accepted (addresses plus TLVs).
MAX_V2_LENGTH = 4096


class ProxyError(ValueError):
    """A PROXY protocol header is malformed."""


def parse_proxy_header(buf: bytearray) -> ProxyHeader | None:
    """Consume a PROXY header from the front of *buf*.

    Returns None when more octets are needed; raises :class:`ProxyError`
    when the buffer cannot start with a valid header.
    """
    if buf[:1] == b"\r":
        return _parse_v2(buf)
    if not _V1_PREFIX.startswith(bytes(buf[:6])):
        raise ProxyError("the connection does not start with a PROXY header")
    return _parse_v1(buf)


def _parse_v1(buf: bytearray) -> ProxyHeader | None:
    end = buf.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(buf) >= _V1_MAX:
            raise ProxyError("PROXY v1 header longer than 107 octets")
        return None
    line = bytes(buf[:end])
    del buf[: end + 2]
    # The line starts with "PROXY " (parse_proxy_header checked the first
    # six octets, and none of them is the CR of the line end).
    words = line.decode("ascii", "replace").split(" ")
    family = words[1]
    if family == "UNKNOWN":
        # "the receiver must ignore anything presented before the CRLF"
        return ProxyHeader._trusted(version=1, command="PROXY", family="UNKNOWN")
    if family not in ("TCP4", "TCP6") or len(words) != 6:
        raise ProxyError(f"malformed PROXY v1 header {line!r}")
    version = 4 if family == "TCP4" else 6
    source, destination = (_address(word, version) for word in words[2:4])
    source_port, destination_port = (_port(word) for word in words[4:6])
    return ProxyHeader._trusted(
        version=1,
        command="PROXY",
        family=family,
        source=source,
        source_port=source_port,
        destination=destination,
        destination_port=destination_port,
    )


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"invalid address {text!r} in PROXY header") from None
    if address.version != version or (version == 6 and "%" in text):
        raise ProxyError(f"address {text!r} does not match the PROXY family")
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyError(f"invalid port {text!r} in PROXY header")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"invalid port {text!r} in PROXY header")
    return port


_FAMILIES = {0x0: "UNKNOWN", 0x1: "TCP4", 0x2: "TCP6", 0x3: "UNIX"}


def _parse_v2(buf: bytearray) -> ProxyHeader | None:
    if not V2_SIGNATURE.startswith(bytes(buf[:12])):
        raise ProxyError("the connection does not start with a PROXY header")
    if len(buf) < 16:
        return None
    version_command, family_protocol, length = struct.unpack("!BBH", buf[12:16])
    if version_command >> 4 != 2 or version_command & 0xF > 1:
        raise ProxyError(f"unsupported PROXY v2 version/command octet {version_command:#x}")
    if length > MAX_V2_LENGTH:
        raise ProxyError(f"PROXY v2 address block of {length} octets is too long")
    if len(buf) < 16 + length:
        return None
    block = bytes(buf[16 : 16 + length])
    del buf[: 16 + length]
    if version_command & 0xF == 0:
        # LOCAL: the proxy's own connection (a health check); no addresses.
        return ProxyHeader._trusted(version=2, command="LOCAL", family="UNKNOWN")
    family = _FAMILIES.get(family_protocol >> 4)
    if family is None or family_protocol & 0xF > 2:
        raise ProxyError(f"unsupported PROXY v2 family/protocol octet {family_protocol:#x}")
    if family == "TCP4":
        return _inet(block, 4, "!4s4sHH", family)
    if family == "TCP6":
        return _inet(block, 16, "!16s16sHH", family)
    if family == "UNIX":
        if len(block) < 216:
            raise ProxyError("PROXY v2 UNIX address block too short")
        source = block[:108].split(b"\x00", 1)[0].decode("utf-8", "replace")
        destination = block[108:216].split(b"\x00", 1)[0].decode("utf-8", "replace")
        return ProxyHeader._trusted(
            version=2, command="PROXY", family="UNIX", source=source, destination=destination
        )
    return ProxyHeader._trusted(version=2, command="PROXY", family="UNKNOWN")


def _inet(block: bytes, size: int, layout: str, family: str) -> ProxyHeader:
    if len(block) < 2 * size + 4:
        raise ProxyError(f"PROXY v2 {family} address block too short")
    source, destination, source_port, destination_port = struct.unpack_from(layout, block)
    return ProxyHeader._trusted(
        version=2,
        command="PROXY",
        family=family,
        source=str(ipaddress.ip_address(source)),
        source_port=source_port,
        destination=str(ipaddress.ip_address(destination)),
        destination_port=destination_port,
    )
