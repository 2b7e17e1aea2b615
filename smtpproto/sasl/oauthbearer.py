# Theory of operation
# -------------------
# OAUTHBEARER (RFC 7628) carries an OAuth 2.0 bearer token behind a GS2
# header (RFC 7628 §3.1):
#
#     client-resp    = (gs2-header kvsep *kvpair kvsep) / kvsep
#
# as in the §4.1 example:
#
#     n,a=user@example.com,^Ahost=server.example.com^Aport=143^A
#     auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==^A^A
#
# The GS2 ``a=`` names the user the token is presented for (RFC 7628 uses
# it that way in every example); ``host`` and ``port`` say where the client
# thinks it is connected and are only checked for syntax; unknown keys are
# ignored (§3.1).  Channel binding is not defined for OAUTHBEARER, so the
# GS2 flag ``p=`` is refused.
#
# A refused token is reported in a challenge carrying JSON (§3.2.2), e.g.
# ``{"status":"invalid_token","scope":"..."}``; "the client MUST then send
# either an additional client response consisting of a single %x01 (control
# A) character to the server in order to allow the server to finish the
# exchange" (§3.2.3), after which the server fails with 535 5.7.8.  Bearer
# tokens are replayable, so the mechanism is ``plaintext`` (§5: it "MUST"
# run under TLS).
from __future__ import annotations

import re
from typing import Any, ClassVar

from ._base import (
    Challenge,
    CheckToken,
    ClientFirst,
    Malformed,
    SASLError,
    ServerMechanism,
    Step,
    Success,
    expect_bool,
    has_control,
    malformed,
    rejected,
)
from ._oauth import BearerClient, check_token, error_json, parse_bearer, parse_error, parse_kvpairs
from ._text import escape_saslname, split_gs2_header

__all__ = ["OAuthBearerClient", "OAuthBearerServer"]

_HOST_RE = re.compile(r"[\x21-\x7e]+", re.ASCII)
_PORT_RE = re.compile(rb"0|[1-9][0-9]{0,4}")


class OAuthBearerClient(BearerClient):
    """The client side of OAUTHBEARER.

    *host* and *port* are sent when given (``""`` and ``0`` leave them
    out).  After a refused token, :attr:`error` holds the server's JSON
    report and ``complete`` stays false.
    """

    name: ClassVar[str] = "OAUTHBEARER"
    plaintext: ClassVar[bool] = True
    strength: ClassVar[int] = 30
    # RFC 7628 §3.2.3: the client answers an error with a single ^A.
    error_ack: ClassVar[bytes] = b"\x01"

    def __init__(self, username: str, token: str, *, host: str = "", port: int = 0) -> None:
        super().__init__()
        if not isinstance(username, str) or has_control(username):
            raise ValueError("OAUTHBEARER user must be a str without control characters")
        check_token("OAUTHBEARER", token)
        if not isinstance(host, str) or (host and not _HOST_RE.fullmatch(host)):
            raise ValueError(f"OAUTHBEARER host must be printable ASCII: {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"OAUTHBEARER port must be 0-65535: {port!r}")
        authzid = f"a={escape_saslname(username)}" if username else ""
        parts = [f"n,{authzid},"]
        if host:
            parts.append(f"host={host}")
        if port:
            parts.append(f"port={port}")
        parts.append(f"auth=Bearer {token}")
        self._message = ("\x01".join(parts) + "\x01\x01").encode("utf-8")
        #: The server's JSON error report, once it refused the token.
        self.error: dict[str, Any] | None = None



class OAuthBearerServer(ServerMechanism):
    """The server side of OAUTHBEARER: asks :class:`CheckToken`.

    *scope* and *openid_configuration*, when given, go into the error
    report (RFC 7628 §3.2.2).
    """

    name: ClassVar[str] = "OAUTHBEARER"
    plaintext: ClassVar[bool] = True

    def __init__(
        self, *, scope: str | None = None, openid_configuration: str | None = None
    ) -> None:
        super().__init__()
        report = {"status": "invalid_token"}
        if scope is not None:
            report["scope"] = scope
        if openid_configuration is not None:
            report["openid-configuration"] = openid_configuration
        self._report = error_json(report)
        self._request: CheckToken | None = None
        self._refused = False

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(data=b"")
        return self._respond(initial_response)

    def _respond(self, data: bytes) -> Step:
        if self._refused:
            if data != b"\x01":
                return malformed("OAUTHBEARER error acknowledgement must be a single ^A")
            return rejected()
        _header, user, rest = split_gs2_header("OAUTHBEARER", data)
        if not rest.startswith(b"\x01"):
            raise Malformed("OAUTHBEARER GS2 header is not followed by ^A")
        pairs = parse_kvpairs("OAUTHBEARER", rest[1:])
        port = pairs.get("port")
        if port is not None and not (_PORT_RE.fullmatch(port) and int(port) <= 65535):
            raise Malformed("OAUTHBEARER port is not a number")
        self._request = CheckToken(
            user=user or "",
            token=parse_bearer("OAUTHBEARER", pairs.get("auth")),
            authzid=None,
        )
        return self._request

    def _resume(self, answer: object) -> Step:
        assert self._request is not None
        if expect_bool(self.name, answer):
            return Success(authcid=self._request.user, authzid=None)
        self._refused = True
        return Challenge(data=self._report)
