# Theory of operation
# -------------------
# ``ServerConfig`` holds every setting of a ``ServerConnection``: the bounds
# that protect memory and time against a hostile client (PROTOCOL.md
# attack class 7), the extensions to offer, and the policies (TLS and AUTH
# required, LMTP, PROXY, lenient parsing).  It is frozen and checked when
# created, so a bad setting fails at start-up with a message naming it,
# not in the middle of a session.
#
# ``offered_extensions`` turns a configuration and the connection's
# security state into the extension objects to advertise: STARTTLS only
# before TLS, REQUIRETLS only under TLS (RFC 8689 §4.1), AUTH only under
# TLS unless cleartext AUTH is allowed (RFC 4954 §4, attack class 8), and
# XCLIENT only to a peer the application trusts.
#
# What is offered depends only on the (frozen) configuration, TLS and
# trust, so it is worked out once and shared: ``offer_for`` keeps an
# ``Offer`` (the extension objects, the parameter owners, the line limits
# and the ready EHLO reply) per (tls, trusted) in a cache that lives on the
# configuration object itself, and every connection of that kind uses it.
# Extension objects hold only configuration values, never session state,
# which is what makes sharing them safe.
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from ._errors import LocalProtocolError
from ._events import Mail, Reply
from ._replies import format_reply
from ._syntax import GrammarError, check_text, parse_domain_or_literal
from .extensions import (
    AuthExtension,
    BinaryMime,
    Chunking,
    DeliverBy,
    Dsn,
    EightBitMime,
    EnhancedStatusCodes,
    Extension,
    FutureRelease,
    HelpExtension,
    Limits,
    MtPriority,
    Pipelining,
    RequireTls,
    Size,
    SmtpUtf8,
    StartTls,
    XclientExtension,
)

__all__ = ["ServerConfig", "offered_extensions", "offer_for", "Offer"]

#: SASL mechanisms the server core can run (smtpproto.sasl), strongest first.
SERVER_SASL = ("SCRAM-SHA-256", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2", "PLAIN", "LOGIN")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of a :class:`ServerConnection`, checked when created."""

    #: The name the server gives in its greeting and EHLO reply.
    hostname: str = "localhost"
    #: Accept the deviations real clients make: a space after the colon of
    #: ``MAIL FROM:``, a path without angle brackets, runs of spaces,
    #: trailing white space, any word as the EHLO/HELO name, and command
    #: lines ended by a bare LF.
    lenient: bool = False
    #: Longest command line, CRLF included (RFC 5321 §4.5.3.1.4);
    #: extensions add to it for MAIL and RCPT.
    max_command_line: int = 512
    #: Largest message in octets, advertised with SIZE (RFC 1870).
    max_message_size: int = 33_554_432
    #: Recipients accepted per transaction; more get 452 (§4.5.3.1.8).
    max_recipients: int = 1000
    #: Mail transactions per session (advertised as LIMITS MAILMAX), or None.
    max_transactions: int | None = None
    #: Mistakes per session: the suggested reply to the max_errors-th
    #: (commands answered 4xx/5xx count) is 421, which closes the session.
    max_errors: int = 20
    #: Unprocessed command input the core holds before giving up.
    max_receive_buffer: int = 262_144
    #: Longest line of message data, CRLF included, or None for no limit.
    max_data_line: int | None = None
    #: Accept bare CR and bare LF in message data as literal data.
    allow_bare_line_endings: bool = False
    #: Offer PIPELINING (RFC 2920).
    pipelining: bool = True
    #: Offer 8BITMIME (RFC 6152).
    eightbitmime: bool = True
    #: Offer SMTPUTF8 (RFC 6531).
    smtputf8: bool = True
    #: Offer DSN (RFC 3461).
    dsn: bool = True
    #: Offer ENHANCEDSTATUSCODES (RFC 2034).
    enhanced_status_codes: bool = True
    #: Offer HELP in the EHLO reply.
    help: bool = True
    #: Offer CHUNKING (RFC 3030): the BDAT command.
    chunking: bool = True
    #: Offer BINARYMIME (RFC 3030) with CHUNKING.
    binarymime: bool = True
    #: Octets of a refused BDAT chunk read and thrown away before the
    #: connection is closed instead (the stream cannot be resynchronised
    #: any other way).
    max_bdat_discard: int = 67_108_864
    #: A certificate is available: offer STARTTLS (RFC 3207) before TLS.
    starttls: bool = False
    #: Refuse mail commands with 530 5.7.0 until TLS is in place (RFC 3207 §4).
    require_tls: bool = False
    #: Offer REQUIRETLS (RFC 8689) on TLS connections.
    requiretls: bool = True
    #: SASL mechanisms to offer with AUTH (RFC 4954); empty: no AUTH.
    auth_mechanisms: tuple[str, ...] = ()
    #: Offer AUTH over cleartext too (not recommended; attack class 8).
    auth_plaintext: bool = False
    #: Refuse MAIL with 530 5.7.0 until the client authenticated (RFC 4954 §6).
    require_auth: bool = False
    #: Failed AUTH attempts before the server answers 421 and closes.
    max_auth_failures: int = 3
    #: Longest SASL line (base64) accepted; RFC 4954 §4 asks for >= 12288.
    max_auth_line: int = 12288
    #: Speak LMTP (RFC 2033): LHLO instead of EHLO/HELO, and one reply per
    #: accepted recipient after the end of data.
    lmtp: bool = False
    #: Expect a PROXY protocol header (v1 or v2) before the greeting.
    proxy_protocol: bool = False
    #: Offer LIMITS (RFC 9422) with RCPTMAX (and MAILMAX when set).
    limits: bool = True
    #: Offer MT-PRIORITY (RFC 6710): the application handles priorities.
    mt_priority: bool = False
    #: Offer DELIVERBY (RFC 2852): the application honours BY=.
    deliverby: bool = False
    #: Offer FUTURERELEASE (RFC 4865): the application holds messages.
    futurerelease: bool = False
    #: Further extension objects to offer.
    extra_extensions: tuple[Extension, ...] = field(default=())

    def __post_init__(self) -> None:
        try:
            check_text("hostname", self.hostname)
            parse_domain_or_literal(self.hostname)
        except GrammarError as exc:
            raise ValueError(f"ServerConfig.hostname: {exc}") from None
        minimums = {
            "max_command_line": 512,
            "max_message_size": 65_536,
            "max_recipients": 100,
            "max_errors": 1,
            "max_receive_buffer": 1024,
            "max_bdat_discard": 0,
            "max_auth_failures": 1,
            "max_auth_line": 12288,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"ServerConfig.{name} must be an integer of at least {minimum}, not {value!r}"
                )
        if self.max_data_line is not None and (
            not isinstance(self.max_data_line, int) or self.max_data_line < 1000
        ):
            raise ValueError("ServerConfig.max_data_line must be at least 1000 (§4.5.3.1.6)")
        if self.max_transactions is not None and self.max_transactions < 1:
            raise ValueError("ServerConfig.max_transactions must be at least 1 or None")
        mechanisms = tuple(m.upper() for m in self.auth_mechanisms)
        for mechanism in mechanisms:
            if mechanism not in SERVER_SASL:
                raise ValueError(
                    f"ServerConfig.auth_mechanisms: unknown mechanism {mechanism!r} "
                    f"(known: {', '.join(SERVER_SASL)})"
                )
        object.__setattr__(self, "auth_mechanisms", mechanisms)
        if self.require_auth and not mechanisms:
            raise ValueError("ServerConfig.require_auth needs auth_mechanisms")
        if self.require_tls and not self.starttls:
            raise ValueError(
                "ServerConfig.require_tls needs starttls=True (or implicit TLS, where "
                "it is not needed)"
            )

    # Caches of derived values.  ``cached_property`` writes the instance's
    # ``__dict__`` directly, so it works on a frozen dataclass; these are no
    # fields (no annotations), so equality, hashing, ``repr`` and
    # ``replace()`` ignore them, and a replaced configuration starts afresh.

    @cached_property
    def _offers(self) -> dict[int, Offer]:
        return {}

    @cached_property
    def _without_auth(self) -> ServerConfig:
        """This configuration with AUTH neither offered nor required (for a
        handler that cannot verify credentials), made once."""
        return replace(self, auth_mechanisms=(), require_auth=False)


def offered_extensions(config: ServerConfig, *, tls: bool, trusted: bool) -> tuple[Extension, ...]:
    """The extension objects to advertise, in EHLO order."""
    offered: list[Extension] = []
    if config.pipelining:
        offered.append(Pipelining())
    offered.append(Size(config.max_message_size))
    if config.eightbitmime:
        offered.append(EightBitMime(binarymime=config.chunking and config.binarymime))
    if config.chunking:
        offered.append(Chunking())
        if config.binarymime:
            offered.append(BinaryMime())
    if config.smtputf8:
        offered.append(SmtpUtf8())
    if config.dsn:
        offered.append(Dsn())
    if config.enhanced_status_codes:
        offered.append(EnhancedStatusCodes())
    if config.starttls and not tls:
        offered.append(StartTls())
    if config.requiretls and tls:
        offered.append(RequireTls())
    if config.auth_mechanisms and (tls or config.auth_plaintext):
        offered.append(AuthExtension(config.auth_mechanisms))
    if config.limits:
        offered.append(Limits(rcptmax=config.max_recipients, mailmax=config.max_transactions))
    if config.mt_priority:
        offered.append(MtPriority())
    if config.deliverby:
        offered.append(DeliverBy())
    if config.futurerelease:
        offered.append(FutureRelease())
    if trusted:
        offered.append(XclientExtension())
    if config.help:
        offered.append(HelpExtension())
    offered.extend(config.extra_extensions)
    return tuple(offered)


class Offer:
    """What a server offers on one kind of connection (configuration, TLS,
    trust), worked out once and shared by every such connection.

    Immutable by convention: nothing here changes after it is built.
    """

    __slots__ = (
        "extensions",
        "by_parameter",
        "limits",
        "line_limit",
        "auth",
        "mail_checks",
        "bare_mail_checks",
        "guarded",
        "ehlo",
        "helo",
        "greeting",
        "wires",
    )

    def __init__(self, config: ServerConfig, *, tls: bool, trusted: bool) -> None:
        extensions = offered_extensions(config, tls=tls, trusted=trusted)
        #: The extension objects advertised, in EHLO order.
        self.extensions = extensions
        #: MAIL/RCPT parameter name -> the offered extension that owns it.
        self.by_parameter: Mapping[str, Extension] = {
            name: ext for ext in extensions for name in ext.mail_parameters | ext.rcpt_parameters
        }
        base = config.max_command_line
        #: Longest command line per verb, CRLF included (§4.5.3.1.4: "SMTP
        #: extensions may be used to increase this limit").
        self.limits: Mapping[str, int] = {
            "MAIL": base + sum(ext.mail_line_extra for ext in extensions),
            "RCPT": base + sum(ext.rcpt_line_extra for ext in extensions),
            # RFC 4954 §4: an initial response of up to max_auth_line octets.
            "AUTH": config.max_auth_line + 40,
        }
        #: The longest of them: the bound of any command line.
        self.line_limit = max(self.limits.values())
        #: The AUTH extension, when offered.
        self.auth = next((e for e in extensions if isinstance(e, AuthExtension)), None)
        #: ``check_mail`` of each extension that has a policy on a whole MAIL
        #: (the base class has none), so a MAIL costs no call for the others.
        self.mail_checks: tuple[Callable[[Mail], Reply | None], ...] = tuple(
            ext.check_mail for ext in extensions if type(ext).check_mail is not Extension.check_mail
        )
        #: The same for a MAIL without parameters: the built-in policies
        #: (SIZE=, BODY=, HOLDFOR=) judge parameters only.
        self.bare_mail_checks: tuple[Callable[[Mail], Reply | None], ...] = tuple(
            ext.check_mail
            for ext in extensions
            if type(ext).check_mail is not Extension.check_mail
            and type(ext) not in _PARAMETER_POLICIES
        )
        #: True when TLS or AUTH is required before some commands.
        self.guarded = config.require_tls or config.require_auth
        #: The usual reply to EHLO/LHLO (no enhanced code: RFC 2034 §3).
        self.ehlo = Reply._trusted(
            code=250, text=(config.hostname, *(ext.ehlo_line() for ext in extensions)), enhanced=None
        )
        #: The reply to HELO (§4.1.1.1: no extensions are listed).
        self.helo = Reply._trusted(code=250, text=(config.hostname,), enhanced=None)
        #: The usual 220 greeting (§4.2, §3.1; for LMTP, RFC 2033 §4.1).
        protocol = "LMTP" if config.lmtp else "ESMTP"
        self.greeting = Reply._trusted(code=220, text=(f"{config.hostname} {protocol} smtpproto",), enhanced=None)
        #: ``id()`` of these replies -> their wire form, made once: ``send``
        #: looks here before formatting.  The EHLO reply is left out when it
        #: cannot be sent (an extension's line over 512 octets: ``send``
        #: then raises, as for any such reply).
        self.wires: dict[int, bytes] = {
            id(self.greeting): format_reply(self.greeting), id(self.helo): format_reply(self.helo)
        }
        try:
            self.wires[id(self.ehlo)] = format_reply(self.ehlo)
        except LocalProtocolError:
            pass


#: Extensions whose ``check_mail`` looks at the MAIL's parameters only.
_PARAMETER_POLICIES = (Size, EightBitMime, FutureRelease)


def offer_for(config: ServerConfig, *, tls: bool, trusted: bool) -> Offer:
    """The shared :class:`Offer` of *config* for a connection with *tls* and
    *trusted*, built on first use."""
    key = tls + 2 * trusted
    offers = config._offers
    offer = offers.get(key)
    if offer is None:
        offer = offers[key] = Offer(config, tls=tls, trusted=trusted)
    return offer
