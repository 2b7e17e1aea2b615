"""The trace header fields a receiving server prepends (RFC 5321 §4.4).

A server that accepts a message adds a ``Received:`` field naming the
client (its EHLO name and address), itself, and the protocol, and the
final delivery adds ``Return-Path:`` with the envelope sender.  Both are
built here from what the session knows; nothing is looked up in the DNS.
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..flows import Envelope, Session

__all__ = [
    "line_ending",
    "local_hostname",
    "protocol_name",
    "received_field",
    "return_path_field",
    "trace_fields",
]


def local_hostname() -> str:
    """This host's name as the operating system gives it (no DNS lookup);
    ``localhost`` when it is not a usable domain name."""
    name = socket.gethostname().rstrip(".")
    labels = name.split(".")
    usable = bool(name) and all(
        label and len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels
    )
    return name if usable else "localhost"


def protocol_name(session: Session, envelope: Envelope, *, lmtp: bool) -> str:
    """The ``with`` keyword of the Received field: ESMTP or LMTP, with S for
    TLS and A for AUTH (RFC 3848), UTF8 variants for SMTPUTF8 (RFC 6531 §3.7.3)."""
    suffix = ("S" if session.tls else "") + ("A" if session.auth_identity is not None else "")
    if lmtp:
        return "LMTP" + suffix
    if "SMTPUTF8" in {name.upper() for name in envelope.mail.parameters}:
        return "UTF8SMTP" + suffix
    return "ESMTP" + suffix


def _address_literal(peer: Any) -> str | None:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` for an IP peer, else None."""
    if not isinstance(peer, (tuple, list)) or not peer or not isinstance(peer[0], str):
        return None
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        return f"[IPv6:{address.compressed}]"
    return f"[{address}]"


def received_field(
    session: Session,
    envelope: Envelope,
    *,
    hostname: str,
    lmtp: bool = False,
    now: datetime | None = None,
    linesep: bytes = b"\r\n",
) -> bytes:
    """The ``Received:`` field, folded, ending with *linesep*::

        Received: from client.example ([192.0.2.1])
                by mx.example with ESMTPS for <bob@example.org>;
                Tue, 01 Jul 2025 10:00:00 +0200

    ``from`` is the client's EHLO name followed by its address literal (the
    TCP-info of RFC 5321 §4.4; none for a Unix-domain socket); ``for``
    appears only when the message has a single recipient, so a copy never
    reveals the other recipients.
    """
    name = session.ehlo_name or "unknown"
    literal = _address_literal(session.peer)
    origin = f"{name} ({literal})" if literal is not None else name
    via = f"by {hostname} with {protocol_name(session, envelope, lmtp=lmtp)}"
    recipients: Sequence[str] = envelope.recipient_addresses
    if len(recipients) == 1:
        via += f" for <{recipients[0]}>"
    stamp = email.utils.format_datetime(now if now is not None else datetime.now().astimezone())
    fold = linesep + b"\t"
    return (
        b"Received: from " + origin.encode("utf-8") + fold + via.encode("utf-8") + b";" + fold
        + stamp.encode("ascii") + linesep
    )


def return_path_field(envelope: Envelope, *, linesep: bytes = b"\r\n") -> bytes:
    """``Return-Path: <sender>`` (``<>`` for the null sender), RFC 5321 §4.4."""
    return b"Return-Path: <" + envelope.sender.encode("utf-8") + b">" + linesep


def line_ending(content: bytes) -> bytes:
    """The line end of *content*'s first line: CRLF (the SMTP form, and the
    default) or a bare LF."""
    end = content.find(b"\n")
    return b"\n" if end > 0 and content[end - 1 : end] != b"\r" else b"\r\n"


def trace_fields(
    session: Session, envelope: Envelope, content: bytes, *, hostname: str, lmtp: bool = False
) -> bytes:
    """``Return-Path:`` and ``Received:``, with the line ends *content* uses."""
    linesep = line_ending(content)
    return return_path_field(envelope, linesep=linesep) + received_field(
        session, envelope, hostname=hostname, lmtp=lmtp, linesep=linesep
    )
