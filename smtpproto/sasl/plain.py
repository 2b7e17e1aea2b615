# Theory of operation
# -------------------
# PLAIN (RFC 4616) is one client message:
#
#     message   = [authzid] UTF8NUL authcid UTF8NUL passwd
#     authcid   = 1*SAFE ; MUST accept up to 255 octets
#     authzid   = 1*SAFE ; MUST accept up to 255 octets
#     passwd    = 1*SAFE ; MUST accept up to 255 octets
#     SAFE      = UTF1 / UTF2 / UTF3 / UTF4 ; any UTF-8 encoded Unicode
#                 ; character except NUL
#
# It is client-first: the message goes as the initial response, or answers
# the server's empty first challenge.  The password crosses the wire as it
# is, so the mechanism is ``plaintext``.  The server splits on NUL and
# insists on exactly two; anything else (one NUL, three NULs, an empty
# authcid or password, invalid UTF-8, a control character in an identity)
# fails with 501 5.5.2 before the application is asked anything.  An empty
# authzid means "act as myself".
from __future__ import annotations

from typing import ClassVar

from ._base import (
    Challenge,
    CheckPassword,
    ClientFirst,
    Malformed,
    SASLError,
    ServerMechanism,
    Step,
    Success,
    decode_identity,
    decode_utf8,
    expect_bool,
    rejected,
)

__all__ = ["PlainClient", "PlainServer"]


def _check_field(what: str, value: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"PLAIN {what} must be a str, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"PLAIN {what} must not be empty (RFC 4616 §2: 1*SAFE)")
    if "\0" in value:
        raise ValueError(f"PLAIN {what} must not contain NUL")


class PlainClient(ClientFirst):
    """The client side of PLAIN (RFC 4616).

    ``authzid`` is the identity to act as (``None``: the user itself).
    Raises ``ValueError`` for an empty user name or password, or one with
    a NUL in it.
    """

    name: ClassVar[str] = "PLAIN"
    plaintext: ClassVar[bool] = True
    strength: ClassVar[int] = 20

    def __init__(self, username: str, password: str, authzid: str | None = None) -> None:
        super().__init__()
        _check_field("user name", username)
        _check_field("password", password)
        if authzid is not None:
            _check_field("authzid", authzid)
        fields = (authzid or "", username, password)
        self._message = b"\0".join(f.encode("utf-8") for f in fields)

    def _first_message(self) -> bytes:
        return self._message

    def _next(self, challenge: bytes) -> bytes:
        raise SASLError("PLAIN: the server sent a challenge after the message")

    @property
    def complete(self) -> bool:
        return self._sent_first


class PlainServer(ServerMechanism):
    """The server side of PLAIN: asks :class:`CheckPassword`."""

    name: ClassVar[str] = "PLAIN"
    plaintext: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._request: CheckPassword | None = None

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(data=b"")
        return self._respond(initial_response)

    def _respond(self, data: bytes) -> Step:
        fields = data.split(b"\0")
        if len(fields) != 3:
            raise Malformed(f"PLAIN message needs exactly 2 NULs, got {len(fields) - 1}")
        authzid = decode_identity("PLAIN authzid", fields[0])
        authcid = decode_identity("PLAIN authcid", fields[1])
        password = decode_utf8("PLAIN password", fields[2])
        if not authcid:
            raise Malformed("PLAIN authcid is empty")
        if not password:
            raise Malformed("PLAIN password is empty")
        self._request = CheckPassword(
            authcid=authcid, password=password, authzid=authzid or None
        )
        return self._request

    def _resume(self, answer: object) -> Step:
        assert self._request is not None
        if expect_bool(self.name, answer):
            return Success(authcid=self._request.authcid, authzid=self._request.authzid)
        return rejected()
