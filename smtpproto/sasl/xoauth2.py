# Theory of operation
# -------------------
# XOAUTH2 is Google's OAuth 2.0 mechanism (documented by Google, not an
# RFC), the forerunner of OAUTHBEARER.  The client sends one message:
#
#     user={user}^Aauth=Bearer {token}^A^A
#
# and the server either accepts it (235) or reports the refused token in a
# challenge carrying a JSON object such as
# ``{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}``;
# the client answers it with an empty response and the server then fails
# the attempt with 535 5.7.8.
#
# The bearer token is replayable by whoever reads it, so the mechanism is
# ``plaintext``: like PLAIN it belongs under TLS only (RFC 6750 §5.3 for
# bearer tokens in general).  The server asks the application
# ``CheckToken(user, token)``; it never interprets tokens itself.
from __future__ import annotations

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
    decode_identity,
    expect_bool,
    has_control,
    malformed,
    rejected,
)
from ._oauth import BearerClient, check_token, error_json, parse_bearer, parse_error, parse_kvpairs

__all__ = ["XOAuth2Client", "XOAuth2Server"]


class XOAuth2Client(BearerClient):
    """The client side of XOAUTH2.

    After a refused token, :attr:`error` holds the server's JSON report and
    ``complete`` stays false.
    """

    name: ClassVar[str] = "XOAUTH2"
    plaintext: ClassVar[bool] = True
    strength: ClassVar[int] = 25
    # XOAUTH2: the client answers the error report with an empty line.
    error_ack: ClassVar[bytes] = b""

    def __init__(self, username: str, token: str) -> None:
        super().__init__()
        if not isinstance(username, str):
            raise TypeError(f"XOAUTH2 user must be a str, not {type(username).__name__}")
        if not username or has_control(username):
            raise ValueError("XOAUTH2 user must be non-empty, without control characters")
        check_token("XOAUTH2", token)
        self._message = f"user={username}\x01auth=Bearer {token}\x01\x01".encode("utf-8")
        #: The server's JSON error report, once it refused the token.
        self.error: dict[str, Any] | None = None



class XOAuth2Server(ServerMechanism):
    """The server side of XOAUTH2: asks :class:`CheckToken`.

    *scope*, when given, goes into the error report.
    """

    name: ClassVar[str] = "XOAUTH2"
    plaintext: ClassVar[bool] = True

    def __init__(self, *, scope: str | None = None) -> None:
        super().__init__()
        report = {"status": "401", "schemes": "Bearer"}
        if scope is not None:
            report["scope"] = scope
        self._report = error_json(report)
        self._request: CheckToken | None = None
        self._refused = False

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(data=b"")
        return self._respond(initial_response)

    def _respond(self, data: bytes) -> Step:
        if self._refused:
            # The client's acknowledgement of the error report: empty.
            if data:
                return malformed("XOAUTH2 error acknowledgement must be empty")
            return rejected()
        pairs = parse_kvpairs("XOAUTH2", data, utf8_keys=frozenset({"user"}))
        user = pairs.get("user")
        if not user:
            raise Malformed("XOAUTH2 message has no user")
        self._request = CheckToken(
            user=decode_identity("XOAUTH2 user", user),
            token=parse_bearer("XOAUTH2", pairs.get("auth")),
            authzid=None,
        )
        return self._request

    def _resume(self, answer: object) -> Step:
        assert self._request is not None
        if expect_bool(self.name, answer):
            return Success(authcid=self._request.user, authzid=None)
        self._refused = True
        return Challenge(data=self._report)
