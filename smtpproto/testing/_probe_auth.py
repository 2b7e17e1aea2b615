# Theory of operation
# -------------------
# AUTH abuse (class 6, RFC 4954).  Each attack brings a session to where
# AUTH is offered (after STARTTLS whenever the server offers it, since most
# servers offer AUTH only under TLS), sends one malformed, out-of-place or
# repeated AUTH, answers any 334 with the attack's next line (or ``*``), and
# judges the final reply: a 2xx means the server let the abuse authenticate
# (unsafe); a 4xx/5xx or a closed connection is safe; no answer at all
# leaves the session stuck (unsafe).
#
# Real credentials, when given, are only ever sent over TLS: without TLS
# the attacks use a made-up user and password.  The attacks that need a
# successful login (AUTH twice, AUTH during a transaction) are not
# applicable without credentials.
from __future__ import annotations

import base64
from collections.abc import Callable

from ..extensions import Capabilities
from ._probe_model import Attack, Finding, attack, inconclusive, safe, unsafe
from ._probe_session import expect, hello, login, sasl_exchange, secure, stopped
from ._probe_wire import NotApplicable, SetupFailed, Wire, describe, mail_line

__all__ = ["AUTH_ATTACKS"]

_BOGUS = ("smtpproto-probe", "not-the-password")


def _auth_ready(wire: Wire) -> Capabilities:
    """A session where AUTH is offered: over TLS when STARTTLS is."""
    caps = hello(wire)
    if caps.starttls:
        caps = secure(wire, caps)
    if not caps.auth_mechanisms:
        raise NotApplicable("the server does not offer AUTH" + (" under TLS" if wire.tls else ""))
    return caps


def _credentials(wire: Wire) -> tuple[bytes, bytes]:
    """The real credentials under TLS, made-up ones otherwise."""
    target = wire.target
    if wire.tls and target.username is not None and target.password is not None:
        return target.username.encode("utf-8"), target.password.encode("utf-8")
    return _BOGUS[0].encode(), _BOGUS[1].encode()


def _mechanism(caps: Capabilities) -> str:
    for name in ("PLAIN", "LOGIN"):
        if name in caps.auth_mechanisms:
            return name
    return caps.auth_mechanisms[0]


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _attempt(mechanism: str, user: bytes, password: bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """An AUTH line and the answers to its challenges: PLAIN with an initial
    response; LOGIN (and anything else) answering user, then password."""
    if mechanism == "PLAIN":
        return b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password) + b"\r\n", ()
    return f"AUTH {mechanism}\r\n".encode(), (_b64(user), _b64(password))


def _judge(wire: Wire, line: bytes, what: str, responses: tuple[bytes, ...] = ()) -> Finding:
    wire.mark()
    final = sasl_exchange(wire, line, responses)
    if final is None:
        if wire.gone:
            return safe(f"closed the connection on {what}")
        if (wire.ended or "").startswith("timed out"):
            return unsafe(f"did not answer {what} within {wire.target.timeout:g} s")
        return inconclusive(f"{what}: {stopped(wire)}")
    if final.is_success:
        return unsafe(f"accepted {what}: {describe(final)}")
    if final.code == 334:
        return inconclusive(f"{what}: the server kept sending challenges")
    wire.quit()
    return safe(f"refused {what} ({describe(final)})")


Build = Callable[[Wire, Capabilities], tuple[bytes, tuple[bytes, ...]]]


def _simple(name: str, what: str, build: Build, doc: str, *, needs: str | None = None) -> Attack:
    def body(wire: Wire) -> Finding:
        caps = _auth_ready(wire)
        if needs is not None and needs not in caps.auth_mechanisms:
            raise NotApplicable(f"the server does not offer AUTH {needs}")
        line, responses = build(wire, caps)
        return _judge(wire, line, what, responses)

    body.__doc__ = f"AUTH abuse: {what}.\n\n{doc} Unsafe when the server answers 2xx."
    return attack(f"auth-{name}", 6, what)(body)


def _unpadded(wire: Wire, caps: Capabilities) -> tuple[bytes, tuple[bytes, ...]]:
    data = b"\0" + b"\0".join(s.encode() for s in _BOGUS)
    while len(data) % 3 == 0:  # make sure the encoding has padding to drop
        data += b"x"
    return b"AUTH PLAIN " + _b64(data).rstrip(b"=") + b"\r\n", ()


def _plain(fields: Callable[[bytes, bytes], bytes]) -> Build:
    def build(wire: Wire, caps: Capabilities) -> tuple[bytes, tuple[bytes, ...]]:
        user, password = _credentials(wire)
        return b"AUTH PLAIN " + _b64(fields(user, password)) + b"\r\n", ()

    return build


def _switch(wire: Wire, caps: Capabilities) -> tuple[bytes, tuple[bytes, ...]]:
    user, password = _credentials(wire)
    first = "LOGIN" if "LOGIN" in caps.auth_mechanisms else _mechanism(caps)
    return f"AUTH {first}\r\n".encode(), (b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password),)


_SIMPLE = (
    _simple("unknown-mechanism", "AUTH with an unknown mechanism",
            lambda w, c: (b"AUTH XPROBE-UNKNOWN\r\n", ()),
            "RFC 4954 §4: an unsupported mechanism gets 504."),
    _simple("cancel", "AUTH cancelled with *",
            lambda w, c: (f"AUTH {_mechanism(c)}\r\n".encode(), (b"*",)),
            "RFC 4954 §4: a client answering a challenge with * cancels; the reply is 501."),
    _simple("invalid-base64", "AUTH with an initial response that is not base64",
            lambda w, c: (f"AUTH {_mechanism(c)} !!not-base64!!\r\n".encode(), ()),
            "RFC 4954 §4: undecodable base64 gets 501."),
    _simple("unpadded-base64", "AUTH PLAIN with unpadded base64", _unpadded,
            "RFC 4648 §3.2 and RFC 4954 §4: base64 in SASL keeps its padding.", needs="PLAIN"),
    _simple("empty-initial-response", "AUTH PLAIN =",
            lambda w, c: (b"AUTH PLAIN =\r\n", ()),
            "RFC 4954 §4: '=' is an empty initial response; PLAIN cannot succeed with it "
            "(RFC 4616 §2).", needs="PLAIN"),
    _simple("plain-one-nul", "AUTH PLAIN with one NUL",
            _plain(lambda user, password: user + b"\0" + password),
            "RFC 4616 §2: message = [authzid] NUL authcid NUL passwd: exactly two NULs "
            "(the real credentials are used under TLS).", needs="PLAIN"),
    _simple("plain-three-nuls", "AUTH PLAIN with three NULs",
            _plain(lambda user, password: b"\0" + user + b"\0" + password + b"\0"),
            "RFC 4616 §2: exactly two NULs (the real credentials are used under TLS).",
            needs="PLAIN"),
    _simple("oversized-response", "AUTH with a 64 KiB initial response",
            lambda w, c: (f"AUTH {_mechanism(c)} ".encode() + b"QUFB" * 16384 + b"\r\n", ()),
            "RFC 4954 §4 asks servers to accept 12288 octets and lets them refuse more "
            "(500 5.5.6); the server must answer or close, not hang."),
    _simple("switch-mechanism", "a new AUTH command sent as the answer to a challenge", _switch,
            "RFC 4954 §4: each line after a 334 is a base64 response; an AUTH command there "
            "is invalid base64 (501), never a new exchange."),
)


@attack("auth-before-ehlo", 6, "AUTH PLAIN before EHLO (right after the handshake when STARTTLS is offered)")
def _before_ehlo(wire: Wire) -> Finding:
    """AUTH abuse: AUTH before EHLO.

    After STARTTLS the session starts over (RFC 3207 §4.2) and AUTH needs an
    EHLO first (RFC 4954 §4, 503).  Without STARTTLS the probe sends AUTH
    right after the greeting, with made-up credentials.  Unsafe when the
    server answers 2xx.
    """
    caps = hello(wire)
    if caps.starttls:
        _auth_free_tls(wire)
    else:
        wire.reconnect()
        expect(wire, "greeting", wire.reply())
    user, password = _credentials(wire)
    return _judge(wire, b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password) + b"\r\n", "AUTH before EHLO")


def _auth_free_tls(wire: Wire) -> None:
    wire.send(b"STARTTLS\r\n")
    expect(wire, "STARTTLS", wire.reply(), lambda r: r.code == 220)
    problem = wire.start_tls()
    if problem is not None:
        raise SetupFailed(problem)


def _with_credentials(wire: Wire) -> Capabilities:
    if not wire.target.has_credentials:
        raise NotApplicable("needs credentials (username and password)")
    return _auth_ready(wire)


@attack("auth-twice", 6, "AUTH with the real credentials, then AUTH again")
def _twice(wire: Wire) -> Finding:
    """AUTH abuse: a second AUTH after a successful one.

    RFC 4954 §4: "After a successful AUTH command completes, a server MUST
    reject any further AUTH commands with a 503 reply."  Unsafe when the
    second AUTH is answered 2xx.  Needs credentials.
    """
    caps = login(wire, _with_credentials(wire))
    line, responses = _attempt(_mechanism(caps), *_credentials(wire))
    return _judge(wire, line, "a second AUTH", responses)


@attack("auth-in-transaction", 6, "MAIL, then AUTH with the real credentials")
def _in_transaction(wire: Wire) -> Finding:
    """AUTH abuse: AUTH during a mail transaction.

    RFC 4954 §4: "The AUTH command is not permitted during a mail
    transaction.  An AUTH command issued during a mail transaction MUST be
    rejected with a 503 reply."  Unsafe when it is answered 2xx.  Needs
    credentials.
    """
    caps = _with_credentials(wire)
    wire.send(mail_line(wire.target))
    mail = expect(wire, "MAIL", wire.reply(), lambda r: r.is_success or r.code == 530)
    if mail.code == 530:
        raise NotApplicable("the server requires AUTH before MAIL: AUTH in a transaction would be AUTH twice")
    line, responses = _attempt(_mechanism(caps), *_credentials(wire))
    return _judge(wire, line, "AUTH during a transaction", responses)


_FAILURES = 10


@attack("auth-repeated-failures", 6, f"up to {_FAILURES} AUTH attempts with a wrong password")
def _repeated(wire: Wire) -> Finding:
    """AUTH abuse: password guessing on one connection.

    The server must bound failed attempts: after a few it answers 421 or
    closes (RFC 4954 §4 lets it; the project's attack class 6 asks for it).
    Unsafe when any attempt succeeds, or when the connection is still open
    after ten failures.
    """
    caps = _auth_ready(wire)
    mechanism = _mechanism(caps)
    user, password = _BOGUS[0].encode(), _BOGUS[1].encode()
    line, responses = _attempt(mechanism, user, password)
    wire.mark()
    for attempt in range(1, _FAILURES + 1):
        final = sasl_exchange(wire, line, responses)
        if final is None:
            if wire.gone:
                return safe(f"closed the connection after {attempt - 1} failed attempts")
            return inconclusive(f"attempt {attempt}: {stopped(wire)}")
        if final.is_success:
            return unsafe(f"accepted a wrong password on attempt {attempt}: {describe(final)}")
        if final.code == 421:
            return safe(f"answered 421 and closed after {attempt} failed attempts")
    wire.quit()
    return unsafe(f"still answering after {_FAILURES} failed AUTH attempts on one connection")


@attack("auth-in-cleartext", 6, "AUTH PLAIN with made-up credentials before STARTTLS")
def _cleartext(wire: Wire) -> Finding:
    """AUTH abuse: credentials over cleartext when TLS is available.

    RFC 4954 §4 and RFC 3207 §6: a server that offers STARTTLS should not
    check a plaintext password sent before it.  Unsafe when the server runs
    the exchange in cleartext (235, 334, 535 or 534: it read the password);
    safe when it refuses AUTH outright (503, 504, 530, 538...).  Not
    applicable without STARTTLS.  The credentials sent are made up.
    """
    caps = hello(wire)
    if not caps.starttls:
        raise NotApplicable("the server does not offer STARTTLS: cleartext is all there is")
    user, password = _BOGUS[0].encode(), _BOGUS[1].encode()
    wire.mark()
    wire.send(b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password) + b"\r\n")
    reply = wire.reply()
    if reply is None:
        if wire.gone:
            return safe("closed the connection on AUTH in cleartext")
        return inconclusive(f"no reply to AUTH in cleartext ({stopped(wire)})")
    if reply.code == 334:
        wire.send(b"*\r\n")
        wire.reply()
    wire.quit()
    if reply.is_success or reply.code in (334, 534, 535):
        return unsafe(f"checked a password sent in cleartext ({describe(reply)}) although it offers STARTTLS")
    return safe(f"refused AUTH before STARTTLS ({describe(reply)})")


AUTH_ATTACKS: tuple[Attack, ...] = (*_SIMPLE, _before_ehlo, _twice, _in_transaction, _repeated, _cleartext)
