# Theory of operation
# -------------------
# CRAM-MD5 (RFC 2195) is server-first: the server challenges with a unique
# msg-id-like string, and the client proves it knows the shared secret
# without sending it (RFC 2195 §2):
#
#     S: <1896.697170952@postoffice.reston.mci.net>
#     C: tim b913a602c7eda7a495b4e6e7334d3890
#
# "The latter is computed by applying the keyed MD5 algorithm from
# [KEYED-MD5] where the key is a shared secret and the digested text is the
# timestamp (including angle-brackets)", and "the 'digest' parameter
# itself is a 16-octet value which is sent in hexadecimal format, using
# lower-case ASCII characters."
#
# The server must know the secret itself (or its HMAC-MD5 precomputation),
# so it asks the application with ``LookupPassword`` and compares digests
# in constant time.  The challenge's uniqueness comes from ``secrets`` (no
# clock here); tests inject the ``nonce`` for a fixed challenge.  Being
# server-first, the mechanism takes no initial response: one, even empty,
# fails with 501 5.7.0 (RFC 4954 §6).
from __future__ import annotations

import hmac
import re
import secrets
from typing import ClassVar

from ._base import (
    Challenge,
    ClientMechanism,
    Failure,
    LookupPassword,
    Malformed,
    SASLError,
    ServerMechanism,
    Step,
    Success,
    decode_identity,
    rejected,
)

__all__ = ["CramMD5Client", "CramMD5Server", "cram_md5_digest"]

# The pieces of the challenge: printable ASCII, without the characters
# that delimit a msg-id ("<", ">", "@").
_TOKEN_RE = re.compile(r"[\x21-\x3b\x3d\x3f\x41-\x7e]+")
_DIGEST_RE = re.compile(rb"[0-9a-f]{32}")


def cram_md5_digest(secret: str, challenge: bytes) -> str:
    """The lower-case hex HMAC-MD5 of *challenge* keyed with *secret*."""
    return hmac.new(secret.encode("utf-8"), challenge, "md5").hexdigest()


class CramMD5Client(ClientMechanism):
    """The client side of CRAM-MD5: answers the one challenge."""

    name: ClassVar[str] = "CRAM-MD5"
    plaintext: ClassVar[bool] = False
    strength: ClassVar[int] = 40

    def __init__(self, username: str, password: str) -> None:
        for what, value in (("user name", username), ("password", password)):
            if not isinstance(value, str):
                raise TypeError(f"CRAM-MD5 {what} must be a str, not {type(value).__name__}")
            if not value:
                raise ValueError(f"CRAM-MD5 {what} must not be empty")
        self._username = username.encode("utf-8")
        self._password = password
        self._done = False

    def initial_response(self) -> bytes | None:
        return None  # server-first

    def _respond(self, challenge: bytes) -> bytes:
        if self._done:
            raise SASLError("CRAM-MD5: the server sent a second challenge")
        if not challenge:
            raise SASLError("CRAM-MD5: the challenge is empty")
        self._done = True
        digest = cram_md5_digest(self._password, challenge)
        return self._username + b" " + digest.encode("ascii")

    @property
    def complete(self) -> bool:
        return self._done


class CramMD5Server(ServerMechanism):
    """The server side of CRAM-MD5: challenges, then asks
    :class:`LookupPassword` for the shared secret.

    The challenge is ``<nonce@hostname>``; *nonce* defaults to two random
    numbers joined by a dot.
    """

    name: ClassVar[str] = "CRAM-MD5"
    plaintext: ClassVar[bool] = False

    def __init__(self, hostname: str = "localhost", *, nonce: str | None = None) -> None:
        super().__init__()
        if nonce is None:
            nonce = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**12)}"
        for what, value in (("hostname", hostname), ("nonce", nonce)):
            if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
                raise ValueError(f"CRAM-MD5 {what} must be printable ASCII without <>@: {value!r}")
        self._challenge = f"<{nonce}@{hostname}>".encode("ascii")
        self._user = ""
        self._digest = b""

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is not None:
            # RFC 4954 §6: "501 5.7.0 Client initiated Authentication
            # Exchange" answers an initial response to a server-first
            # mechanism.
            return Failure(
                reason="Client initiated Authentication Exchange", code=501, enhanced="5.7.0"
            )
        return Challenge(data=self._challenge)

    def _respond(self, data: bytes) -> Step:
        user, space, digest = data.rpartition(b" ")
        if not space:
            raise Malformed("CRAM-MD5 response is not 'user SP digest'")
        if not _DIGEST_RE.fullmatch(digest):
            raise Malformed("CRAM-MD5 digest is not 32 lower-case hex digits")
        if not user:
            raise Malformed("CRAM-MD5 user name is empty")
        self._user = decode_identity("CRAM-MD5 user name", user)
        self._digest = digest
        return LookupPassword(authcid=self._user)

    def _resume(self, answer: object) -> Step:
        if answer is None:
            return rejected()
        if not isinstance(answer, str):
            raise SASLError(f"CRAM-MD5: resume() needs a str or None, not {type(answer).__name__}")
        expected = cram_md5_digest(answer, self._challenge).encode("ascii")
        if hmac.compare_digest(expected, self._digest):
            return Success(authcid=self._user, authzid=None)
        return rejected()
