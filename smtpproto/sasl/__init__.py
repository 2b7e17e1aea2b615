"""SASL mechanisms for SMTP AUTH (RFC 4954), as sans-I/O state machines.

Each mechanism has a client side (:class:`ClientMechanism`) and a server
side (:class:`ServerMechanism`) that take and return raw bytes; base64 and
the ``AUTH`` / ``334`` framing are the SMTP connection's job.  A server
mechanism returns *steps*: a :class:`Challenge` to send, a final
:class:`Success` or :class:`Failure`, or a verification request
(:class:`CheckPassword`, :class:`LookupPassword`, :class:`LookupScram`,
:class:`CheckToken`) that the application answers with
:meth:`ServerMechanism.resume`.

Mechanisms: SCRAM-SHA-256 (RFC 5802, RFC 7677), CRAM-MD5 (RFC 2195),
OAUTHBEARER (RFC 7628), XOAUTH2 (Google), PLAIN (RFC 4616) and LOGIN
(draft-murchison-sasl-login).  :func:`choose_client_mechanism` picks the
strongest one both sides support.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._base import (
    Challenge,
    CheckPassword,
    CheckToken,
    ClientMechanism,
    Failure,
    LookupPassword,
    LookupScram,
    SASLError,
    ServerMechanism,
    Step,
    Success,
    Verification,
)
from ._text import saslprep
from .cram_md5 import CramMD5Client, CramMD5Server
from .login import LoginClient, LoginServer
from .oauthbearer import OAuthBearerClient, OAuthBearerServer
from .plain import PlainClient, PlainServer
from .scram import ScramCredentials, ScramSha256Client, ScramSha256Server
from .xoauth2 import XOAuth2Client, XOAuth2Server

__all__ = [
    "SASLError",
    "ClientMechanism",
    "ServerMechanism",
    "Step",
    "Verification",
    "Challenge",
    "Success",
    "Failure",
    "CheckPassword",
    "LookupPassword",
    "LookupScram",
    "CheckToken",
    "ScramCredentials",
    "saslprep",
    "PlainClient",
    "PlainServer",
    "LoginClient",
    "LoginServer",
    "CramMD5Client",
    "CramMD5Server",
    "XOAuth2Client",
    "XOAuth2Server",
    "OAuthBearerClient",
    "OAuthBearerServer",
    "ScramSha256Client",
    "ScramSha256Server",
    "CLIENT_MECHANISMS",
    "SERVER_MECHANISMS",
    "choose_client_mechanism",
]

_CLIENTS: tuple[type[ClientMechanism], ...] = (
    ScramSha256Client,
    CramMD5Client,
    OAuthBearerClient,
    XOAuth2Client,
    PlainClient,
    LoginClient,
)

#: Client mechanism classes by name, strongest first.
CLIENT_MECHANISMS: dict[str, type[ClientMechanism]] = {
    cls.name: cls for cls in sorted(_CLIENTS, key=lambda cls: -cls.strength)
}

#: Server mechanism classes by name.  ``CramMD5Server`` takes the server's
#: host name; the others take no required argument.
SERVER_MECHANISMS: dict[str, type[ServerMechanism]] = {
    cls.name: cls
    for cls in (
        ScramSha256Server,
        CramMD5Server,
        OAuthBearerServer,
        XOAuth2Server,
        PlainServer,
        LoginServer,
    )
}

_Factory = Callable[[str, "str | None", "str | None", str, int], "ClientMechanism | None"]

# How to build each client from the caller's credentials; None when the
# credentials do not fit the mechanism.
_FACTORIES: dict[str, _Factory] = {
    "SCRAM-SHA-256": lambda u, pw, tok, host, port: (
        None if pw is None else ScramSha256Client(u, pw)
    ),
    "CRAM-MD5": lambda u, pw, tok, host, port: None if pw is None else CramMD5Client(u, pw),
    "PLAIN": lambda u, pw, tok, host, port: None if pw is None else PlainClient(u, pw),
    "LOGIN": lambda u, pw, tok, host, port: None if pw is None else LoginClient(u, pw),
    "OAUTHBEARER": lambda u, pw, tok, host, port: (
        None if tok is None else OAuthBearerClient(u, tok, host=host, port=port)
    ),
    "XOAUTH2": lambda u, pw, tok, host, port: None if tok is None else XOAuth2Client(u, tok),
}


def choose_client_mechanism(
    offered: Iterable[str],
    *,
    username: str,
    password: str | None = None,
    token: str | None = None,
    allow_plaintext: bool = False,
    host: str = "",
    port: int = 0,
) -> ClientMechanism | None:
    """The strongest mechanism the server offers and the credentials allow.

    *offered* is the server's list (the EHLO ``AUTH`` keyword's arguments,
    or that text as one space-separated string); names are compared
    case-insensitively.  A password allows SCRAM-SHA-256, CRAM-MD5, PLAIN
    and LOGIN; an OAuth 2.0 bearer *token* allows OAUTHBEARER (sent with
    *host* and *port*) and XOAUTH2.  Mechanisms whose secret crosses the
    wire recoverably (``plaintext``: PLAIN, LOGIN, and the bearer-token
    ones) are only chosen with *allow_plaintext*, i.e. under TLS or when the
    caller insists.  A mechanism that refuses the credentials (SASLprep
    rejects the password, say) is skipped.  Returns a fresh client
    mechanism, or ``None`` when nothing fits.
    """
    if isinstance(offered, str):
        offered = offered.split()
    names = {name.upper() for name in offered}
    for name, cls in CLIENT_MECHANISMS.items():
        if name not in names or (cls.plaintext and not allow_plaintext):
            continue
        try:
            mechanism = _FACTORIES[name](username, password, token, host, port)
        except ValueError:
            continue
        if mechanism is not None:
            return mechanism
    return None
