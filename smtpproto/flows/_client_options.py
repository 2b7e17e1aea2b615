# Theory of operation
# -------------------
# What a caller hands a ``ClientSession`` and what it gets back, as frozen
# values that hold no logic beyond checking themselves:
#
#   ClientOptions   the policy: the hello name, TLS (``TLSMode``), the
#                   credentials for AUTH, PIPELINING, CHUNKING, LMTP, the
#                   core's bounds, and the ``Timeouts`` of RFC 5321
#                   §4.5.3.2, one per step;
#   SendResult      one message's outcome: each recipient's deciding reply,
#                   the reply after the end of data, and what was
#                   negotiated for it as it happened (MAIL and RCPT
#                   pipelined, content by BDAT, MAIL with SMTPUTF8).
#
# They live apart from the flows that use them (``client``, ``_batch``),
# which read them and never change them; ``smtpproto.flows.client`` and
# ``smtpproto.flows`` export them.
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .._client import ClientConfig
from .._events import Reply

__all__ = ["TLSMode", "Timeouts", "ClientOptions", "SendResult"]


class TLSMode(enum.Enum):
    """How the client uses TLS."""

    #: STARTTLS when the server offers it, cleartext otherwise.
    OPPORTUNISTIC = "opportunistic"
    #: STARTTLS or nothing: refuse to go on in cleartext (RFC 3207 §4.1).
    REQUIRED = "required"
    #: Never start TLS.
    NEVER = "never"
    #: TLS from the first byte (RFC 8314, port 465).
    IMPLICIT = "implicit"


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Seconds to wait for each step (RFC 5321 §4.5.3.2 defaults)."""

    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0  # EHLO, MAIL, RCPT, RSET, AUTH...
    data_start: float = 120.0  # the 354 to DATA
    data_block: float = 180.0  # each write of content
    data_end: float = 600.0  # the reply after the end of data

    @classmethod
    def all(cls, seconds: float) -> Timeouts:
        """Every timeout set to *seconds*."""
        return cls(
            connect=seconds,
            greeting=seconds,
            command=seconds,
            data_start=seconds,
            data_block=seconds,
            data_end=seconds,
        )


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How a :class:`ClientSession` talks to its server."""

    #: The name given in EHLO/HELO/LHLO.
    helo_name: str = "localhost"
    #: TLS policy.
    tls: TLSMode = TLSMode.OPPORTUNISTIC
    #: The name the certificate must match (usually the host connected to).
    server_hostname: str | None = None
    #: Credentials for AUTH; none means no AUTH.
    username: str | None = None
    password: str | None = None
    token: str | None = None
    #: Force one SASL mechanism instead of the strongest common one.
    mechanism: str | None = None
    #: Allow PLAIN/LOGIN/bearer tokens without TLS (never by default).
    allow_plaintext_auth: bool = False
    #: Pipeline commands when the server offers PIPELINING (RFC 2920).
    pipelining: bool = True
    #: Send content with BDAT when the server offers CHUNKING (RFC 3030).
    chunking: bool = False
    #: Speak LMTP (RFC 2033).
    lmtp: bool = False
    #: Timeouts per step.
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Bounds of the protocol core.
    config: ClientConfig | None = None

    def __post_init__(self) -> None:
        if self.password is not None and self.token is not None:
            raise ValueError("give a password or a token, not both")
        if (self.password is not None or self.token is not None) and self.username is None:
            raise ValueError("credentials need a username")


@dataclass(frozen=True)
class SendResult:
    """What happened to one message."""

    #: Recipients the server accepted the message for.
    accepted: tuple[str, ...]
    #: Refused recipients -> the reply that refused them.
    refused: dict[str, Reply]
    #: Every recipient's deciding reply: the RCPT refusal, or the reply after
    #: the end of data (LMTP: that recipient's own).
    replies: dict[str, Reply]
    #: The reply after the end of data (the last one, for LMTP).
    data_reply: Reply | None
    #: True when MAIL and the RCPTs (and DATA, when content went by DATA)
    #: were sent as one batch without waiting for their replies, because
    #: the server offered PIPELINING (RFC 2920 §3.1); False when each
    #: command waited for the reply to the one before.
    pipelined: bool = False
    #: True when the content went in BDAT chunks (RFC 3030 §2), False when
    #: it went after DATA (RFC 5321 §4.1.1.4).
    chunked: bool = False
    #: True when MAIL carried the SMTPUTF8 parameter (RFC 6531 §3.4).
    smtputf8: bool = False
