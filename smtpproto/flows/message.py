"""What the client sends: an envelope and content, prepared without I/O.

:func:`prepare` accepts the three forms a caller has at hand:

* an :class:`email.message.EmailMessage` (or ``Message``): the envelope
  comes from its headers when not given (``Sender`` or ``From``; ``To``,
  ``Cc``, ``Bcc``, or the newest ``Resent-*`` block), ``Bcc`` is removed
  from what is sent, and the content is generated with CRLF line ends;
* ``bytes``: sent as they are;
* an iterable of byte chunks: streamed, never joined, so the caller must
  declare up front what MAIL has to say about it (size, 8-bit, UTF-8):
  MAIL goes out before the first chunk is read.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import Message
from email.utils import getaddresses

__all__ = ["Outgoing", "prepare", "DsnOptions"]

_CHUNK = 65536


@dataclass(frozen=True, kw_only=True)
class DsnOptions:
    """Delivery status notification requests (RFC 3461), used when the
    server offers DSN."""

    #: "FULL" or "HDRS": what a bounce returns.
    ret: str | None = None
    #: The envelope identifier.
    envid: str | None = None
    #: "NEVER" or any of "SUCCESS", "FAILURE", "DELAY", for every recipient.
    notify: tuple[str, ...] | None = None


@dataclass(kw_only=True)
class Outgoing:
    """A message ready to send: the envelope and the content chunks."""

    #: The reverse-path (``""`` for the null sender ``<>``).
    sender: str
    #: The forward-paths.
    recipients: list[str]
    #: The content, in chunks (raw, not dot-stuffed; any line ends).
    chunks: Iterable[bytes]
    #: The size in octets, when known (for SIZE=, RFC 1870).
    size: int | None = None
    #: The content has octets above 127 (needs 8BITMIME, RFC 6152).
    eight_bit: bool = False
    #: The envelope or headers need SMTPUTF8 (RFC 6531).
    smtputf8: bool = False
    #: Ask for REQUIRETLS (RFC 8689).
    requiretls: bool = False
    #: DSN requests.
    dsn: DsnOptions = field(default_factory=DsnOptions)


# No DSN request (immutable, so one serves every message).
_NO_DSN = DsnOptions()


def _addresses(fields: list[tuple[str, object]], names: tuple[str, ...]) -> list[str]:
    values = [str(value) for name, value in fields if name.lower() in names]
    return [address for _, address in getaddresses(values) if address]


def _newest_resent_block(message: Message) -> list[tuple[str, object]]:
    """The fields of the newest ``Resent-*`` block.  RFC 5322 §3.6.6: each
    resending prepends its block, and a block holds each field at most
    once, so the block is the first run of ``Resent-*`` fields, up to
    another field or a repeated one."""
    block: list[tuple[str, object]] = []
    for name, value in message.items():
        if not name.lower().startswith("resent-"):
            if block:
                break
            continue
        if any(name.lower() == seen.lower() for seen, _ in block):
            break  # an older block begins
        block.append((name, value))
    return block


def _envelope(message: Message) -> tuple[str | None, list[str]]:
    # RFC 5322 §3.6.6: when Resent-* fields are present, the newest block
    # (the first one) names the sender and recipients of this resending.
    if message.get("Resent-Date") is not None:
        fields = _newest_resent_block(message)
        prefix = "resent-"
    else:
        fields = list(message.items())
        prefix = ""
    senders = _addresses(fields, (prefix + "sender",)) or _addresses(fields, (prefix + "from",))
    recipients = _addresses(fields, tuple(prefix + name for name in ("to", "cc", "bcc")))
    return (senders[0] if senders else None), recipients


def _chunks(data: bytes) -> Iterable[bytes]:
    """*data* in chunks of at most ``_CHUNK`` octets: itself when it fits
    in one (no copy), else slices made one at a time as they are sent."""
    if len(data) <= _CHUNK:
        return (data,) if data else ()
    return _slices(data)


def _slices(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _CHUNK):
        yield data[start : start + _CHUNK]


def prepare(
    message: Message | bytes | bytearray | Iterable[bytes],
    sender: str | None = None,
    recipients: Iterable[str] | None = None,
    *,
    size: int | None = None,
    eight_bit: bool | None = None,
    smtputf8: bool | None = None,
    requiretls: bool = False,
    dsn: DsnOptions | None = None,
) -> Outgoing:
    """Turn *message* and the envelope into an :class:`Outgoing`.

    For an email message, *sender* and *recipients* default to its
    headers.  For bytes and chunks they are required.  A missing envelope
    (no sender, no recipient) is a ``ValueError``.  ``eight_bit`` and
    ``smtputf8`` are found out from bytes and messages; for chunks they
    default to False, and the client core refuses an 8-bit chunk it was not
    told about rather than send it undeclared.
    """
    if isinstance(message, Message):
        found_sender, found_recipients = _envelope(message)
        if sender is None:
            if found_sender is None:
                raise ValueError("the message has no From or Sender address: give the sender")
            sender = found_sender
        chosen = found_recipients if recipients is None else list(recipients)
        if not chosen:
            raise ValueError("the message names no recipient (To, Cc, Bcc): give the recipients")
        stripped = copy.copy(message)
        for name in ("Bcc", "Resent-Bcc"):
            del stripped[name]
        base = stripped.policy if isinstance(stripped.policy, email_policy.EmailPolicy) else email_policy.default
        policy = base.clone(linesep="\r\n")
        if not all(a.isascii() for a in [sender, *chosen, *found_recipients, found_sender or ""]):
            # RFC 6532: with SMTPUTF8 the addresses go into the header
            # fields as UTF-8 (encoded words would break them).
            policy = policy.clone(utf8=True)
        content = stripped.as_bytes(policy=policy)
        return _finish(sender, chosen, content, eight_bit, smtputf8, requiretls, dsn)
    if sender is None or recipients is None:
        raise ValueError("bytes and chunked content need an explicit sender and recipients")
    chosen = list(recipients)
    if not chosen:
        raise ValueError("a message needs at least one recipient")
    if isinstance(message, (bytes, bytearray)):
        return _finish(sender, chosen, bytes(message), eight_bit, smtputf8, requiretls, dsn)
    return Outgoing(
        sender=sender,
        recipients=chosen,
        chunks=message,
        size=size,
        eight_bit=bool(eight_bit),
        smtputf8=bool(smtputf8) or not all(a.isascii() for a in [sender, *chosen]),
        requiretls=requiretls,
        dsn=dsn or _NO_DSN,
    )


def _finish(
    sender: str,
    recipients: list[str],
    content: bytes,
    eight_bit: bool | None,
    smtputf8: bool | None,
    requiretls: bool,
    dsn: DsnOptions | None,
) -> Outgoing:
    ascii_content = content.isascii()
    if smtputf8 is None:
        # RFC 6532: UTF-8 in header fields needs SMTPUTF8, as do UTF-8 addresses.
        smtputf8 = not (sender.isascii() and all(a.isascii() for a in recipients))
        if not (smtputf8 or ascii_content):
            header_end = content.find(b"\r\n\r\n")
            smtputf8 = not (content if header_end < 0 else content[:header_end]).isascii()
    return Outgoing(
        sender=sender,
        recipients=recipients,
        chunks=_chunks(content),
        size=len(content),
        eight_bit=(not ascii_content) if eight_bit is None else eight_bit,
        smtputf8=smtputf8,
        requiretls=requiretls,
        dsn=dsn or _NO_DSN,
    )
