# Theory of operation
# -------------------
# SCRAM-SHA-256 (RFC 7677, the SHA-256 instance of RFC 5802), without
# channel binding.  Both sides prove they know the salted password without
# sending it, and the server never needs the password itself: it stores
# ``ScramCredentials`` (salt, iteration count, StoredKey, ServerKey).  The
# exchange of RFC 7677 §3:
#
#     C: n,,n=user,r=rOprNGfwEbeRWgbNEkqO
#     S: r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,
#        s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096
#     C: c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,
#        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=
#     S: v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=
#
# and the keys of RFC 5802 §3:
#
#     SaltedPassword  := Hi(Normalize(password), salt, i)
#     ClientKey       := HMAC(SaltedPassword, "Client Key")
#     StoredKey       := H(ClientKey)
#     AuthMessage     := client-first-message-bare + "," +
#                        server-first-message + "," +
#                        client-final-message-without-proof
#     ClientSignature := HMAC(StoredKey, AuthMessage)
#     ClientProof     := ClientKey XOR ClientSignature
#     ServerKey       := HMAC(SaltedPassword, "Server Key")
#     ServerSignature := HMAC(ServerKey, AuthMessage)
#
# SMTP has no "additional data with success" (RFC 4954 §4), so the server's
# final ``v=`` message travels as a challenge; the client checks it in
# ``respond()``, answers ``b""``, and only then is ``complete``: a 235 that
# comes before the server proved itself must be refused.
#
# Attributes are parsed in the order the grammar fixes (RFC 5802 §7), and
# every deviation fails: a reserved ``m=`` extension ("its presence ...
# MUST cause authentication failure"), a missing or misplaced attribute,
# invalid base64, a nonce that does not extend the client's, an iteration
# count under 4096 (RFC 7677 §4: "the hash iteration-count announced by a
# server SHOULD be at least 4096") or over the client's bound (a hostile
# server could make the client spin).  User names are prepared with
# SASLprep as query strings (RFC 5802 §5.1) on both sides, passwords as
# stored strings (§2.2).  Nonces come from ``secrets`` unless a test
# injects them.
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import ClassVar, Self

from ._base import (
    Challenge,
    ClientFirst,
    LookupScram,
    Malformed,
    SASLError,
    ServerMechanism,
    Step,
    Success,
    decode_utf8,
    has_control,
    malformed,
    rejected,
)
from ._text import escape_saslname, saslprep, split_gs2_header, unescape_saslname

__all__ = ["ScramCredentials", "ScramSha256Client", "ScramSha256Server"]

_HASH = "sha256"
_KEY_LENGTH = hashlib.sha256().digest_size
#: RFC 7677 §4: the iteration count "SHOULD be at least 4096".
MIN_ITERATIONS = 4096
# RFC 5802 §7: printable = %x21-2B / %x2D-7E ; Printable ASCII except ","
_NONCE_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# posit-number = %x31-39 *DIGIT (bounded: a longer one is out of range)
_ITERATIONS_RE = re.compile(r"[1-9][0-9]{0,9}")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, _HASH).digest()


def _h(data: bytes) -> bytes:
    return hashlib.new(_HASH, data).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64 (no stray characters, correct padding); ValueError."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    # Hi() is PBKDF2 (RFC 2898) with HMAC as the PRF and one block of output.
    prepared = saslprep(password).encode("utf-8")
    return hashlib.pbkdf2_hmac(_HASH, prepared, salt, iterations)


def _attributes(text: str) -> list[tuple[str, str]]:
    """Split ``attr-val *("," attr-val)``; ValueError when malformed.

    ``attr-val = ALPHA "=" value`` and ``value = 1*value-char`` (RFC 5802
    §7): every value is non-empty.
    """
    out = []
    for part in text.split(","):
        if len(part) < 3 or part[1] != "=" or part[0] not in string.ascii_letters:
            raise ValueError("malformed attribute")
        out.append((part[0], part[2:]))
    return out


def _check_nonce(what: str, nonce: str) -> str:
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise ValueError(f"SCRAM {what} must be printable ASCII without ','")
    return nonce


@dataclass(frozen=True, slots=True, kw_only=True)
class ScramCredentials:
    """What a SCRAM-SHA-256 server stores for a user (RFC 5802 §3): never
    the password."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.salt, bytes) or not self.salt:
            raise ValueError("SCRAM salt must be non-empty bytes")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise TypeError("SCRAM iteration count must be an int")
        if self.iterations < 1:
            raise ValueError("SCRAM iteration count must be positive")
        for what, key in (("stored_key", self.stored_key), ("server_key", self.server_key)):
            if not isinstance(key, bytes) or len(key) != _KEY_LENGTH:
                raise ValueError(f"SCRAM {what} must be {_KEY_LENGTH} bytes")

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = MIN_ITERATIONS
    ) -> Self:
        """Derive the credentials from *password* (prepared with SASLprep),
        with a random 16-octet salt unless *salt* is given."""
        if salt is None:
            salt = secrets.token_bytes(16)
        salted = _salted_password(password, salt, iterations)
        return cls(
            salt=salt,
            iterations=iterations,
            stored_key=_h(_hmac(salted, b"Client Key")),
            server_key=_hmac(salted, b"Server Key"),
        )


class ScramSha256Client(ClientFirst):
    """The client side of SCRAM-SHA-256.

    *authzid* is the identity to act as (``None``: the user itself);
    *nonce* the client nonce (random by default).  Server-first messages
    asking for more than *max_iterations* are refused.  Raises
    ``ValueError`` when SASLprep refuses the user name or password.
    """

    name: ClassVar[str] = "SCRAM-SHA-256"
    plaintext: ClassVar[bool] = False
    strength: ClassVar[int] = 50

    def __init__(
        self,
        username: str,
        password: str,
        authzid: str | None = None,
        *,
        nonce: str | None = None,
        max_iterations: int = 1_000_000,
    ) -> None:
        super().__init__()
        user = saslprep(username, allow_unassigned=True)
        if not user:
            raise ValueError("SCRAM user name is empty after SASLprep")
        saslprep(password)  # fail now rather than mid-exchange
        self._password = password
        if authzid is not None and (not authzid or has_control(authzid)):
            raise ValueError("SCRAM authzid must be non-empty, without control characters")
        self._nonce = _check_nonce("nonce", secrets.token_urlsafe(18) if nonce is None else nonce)
        self._max_iterations = max_iterations
        authz = "" if authzid is None else f"a={escape_saslname(authzid)}"
        self._gs2_header = f"n,{authz},"
        self._first_bare = f"n={escape_saslname(user)},r={self._nonce}"
        self._server_signature: bytes | None = None
        self._verified = False

    def _first_message(self) -> bytes:
        return (self._gs2_header + self._first_bare).encode("utf-8")

    def _next(self, challenge: bytes) -> bytes:
        if self._verified:
            raise SASLError("SCRAM-SHA-256: the server sent a challenge after its signature")
        try:
            text = challenge.decode("utf-8")
            attributes = _attributes(text)
        except ValueError:
            raise SASLError("SCRAM-SHA-256: malformed server message") from None
        if self._server_signature is None:
            return self._client_final(text, attributes)
        return self._verify(attributes)

    def _client_final(self, server_first: str, attributes: list[tuple[str, str]]) -> bytes:
        keys = "".join(key for key, _ in attributes)
        if keys.startswith("m"):
            raise SASLError("SCRAM-SHA-256: the server requires an unsupported extension")
        if not keys.startswith("rsi"):
            raise SASLError("SCRAM-SHA-256: server-first message is not r=,s=,i=")
        nonce, salt_b64, count = (value for _, value in attributes[:3])
        if not (nonce.startswith(self._nonce) and len(nonce) > len(self._nonce)):
            raise SASLError("SCRAM-SHA-256: the server nonce does not extend the client nonce")
        if not _NONCE_RE.fullmatch(nonce):
            raise SASLError("SCRAM-SHA-256: the server nonce is not printable ASCII")
        try:
            salt = _unb64(salt_b64)
        except ValueError:
            raise SASLError("SCRAM-SHA-256: the salt is not valid base64") from None
        if not _ITERATIONS_RE.fullmatch(count):
            raise SASLError("SCRAM-SHA-256: the iteration count is not a number in range")
        iterations = int(count)
        if iterations < MIN_ITERATIONS:
            raise SASLError(
                f"SCRAM-SHA-256: iteration count {iterations} is under {MIN_ITERATIONS}"
            )
        if iterations > self._max_iterations:
            raise SASLError(
                f"SCRAM-SHA-256: iteration count {iterations} is over {self._max_iterations}"
            )
        salted = _salted_password(self._password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c={_b64(self._gs2_header.encode('utf-8'))},r={nonce}"
        auth_message = f"{self._first_bare},{server_first},{without_proof}".encode("utf-8")
        signature = _hmac(_h(client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def _verify(self, attributes: list[tuple[str, str]]) -> bytes:
        assert self._server_signature is not None
        key, value = attributes[0]
        if key == "e":
            raise SASLError(f"SCRAM-SHA-256: the server reported an error: {value[:64]!r}")
        if key != "v":
            raise SASLError("SCRAM-SHA-256: server-final message is not v= or e=")
        try:
            signature = _unb64(value)
        except ValueError:
            raise SASLError("SCRAM-SHA-256: the server signature is not valid base64") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise SASLError("SCRAM-SHA-256: the server signature is wrong (not the real server?)")
        self._verified = True
        return b""

    @property
    def complete(self) -> bool:
        return self._verified


class _Stage(enum.Enum):
    CLIENT_FIRST = enum.auto()
    CLIENT_FINAL = enum.auto()
    ACKNOWLEDGE = enum.auto()


class ScramSha256Server(ServerMechanism):
    """The server side of SCRAM-SHA-256: asks :class:`LookupScram`.

    *nonce* is the server's part of the nonce (random by default).  The
    ``Success`` carries the client's authzid, if any: the application must
    decide whether the user may act as it.  To hide whether a user exists,
    answer ``LookupScram`` for an unknown one with made-up credentials
    instead of ``None``: the attempt then fails at the proof, as a wrong
    password does.
    """

    name: ClassVar[str] = "SCRAM-SHA-256"
    plaintext: ClassVar[bool] = False

    def __init__(self, *, nonce: str | None = None) -> None:
        super().__init__()
        self._server_nonce = _check_nonce(
            "server nonce", secrets.token_urlsafe(18) if nonce is None else nonce
        )
        self._stage = _Stage.CLIENT_FIRST
        self._gs2_header = b""
        self._first_bare = ""
        self._nonce = ""
        self._server_first = ""
        self._authcid = ""
        self._authzid: str | None = None
        self._credentials: ScramCredentials | None = None

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(data=b"")
        return self._respond(initial_response)

    def _respond(self, data: bytes) -> Step:
        if self._stage is _Stage.CLIENT_FIRST:
            return self._client_first(data)
        if self._stage is _Stage.CLIENT_FINAL:
            return self._client_final(data)
        if data:
            return malformed("SCRAM-SHA-256 acknowledgement must be empty")
        return Success(authcid=self._authcid, authzid=self._authzid)

    def _client_first(self, data: bytes) -> Step:
        self._gs2_header, self._authzid, bare = split_gs2_header(self.name, data)
        self._first_bare = decode_utf8("SCRAM client-first message", bare)
        attributes = _parse(self._first_bare)
        keys = "".join(key for key, _ in attributes)
        if keys.startswith("m"):
            # RFC 5802 §5.1: "m: This attribute is reserved for future
            # extensibility. [...] its presence in a client or a server
            # message MUST cause authentication failure"
            return rejected("SCRAM extension not supported")
        if not keys.startswith("nr"):
            raise Malformed("SCRAM client-first message is not n=,r=")
        try:
            username = saslprep(unescape_saslname(attributes[0][1]), allow_unassigned=True)
        except ValueError as exc:
            raise Malformed(f"SCRAM user name: {exc}") from None
        if not username:
            raise Malformed("SCRAM user name is empty after SASLprep")
        client_nonce = attributes[1][1]
        if not _NONCE_RE.fullmatch(client_nonce):
            raise Malformed("SCRAM client nonce is not printable ASCII")
        self._authcid = username
        self._nonce = client_nonce + self._server_nonce
        return LookupScram(authcid=username)

    def _resume(self, answer: object) -> Step:
        if answer is None:
            return rejected()
        if not isinstance(answer, ScramCredentials):
            raise SASLError(
                f"SCRAM-SHA-256: resume() needs ScramCredentials or None, "
                f"not {type(answer).__name__}"
            )
        self._credentials = answer
        self._server_first = f"r={self._nonce},s={_b64(answer.salt)},i={answer.iterations}"
        self._stage = _Stage.CLIENT_FINAL
        return Challenge(data=self._server_first.encode("ascii"))

    def _client_final(self, data: bytes) -> Step:
        assert self._credentials is not None
        text = decode_utf8("SCRAM client-final message", data)
        attributes = _parse(text)
        keys = "".join(key for key, _ in attributes)
        if len(keys) < 3 or not keys.startswith("cr") or not keys.endswith("p"):
            raise Malformed("SCRAM client-final message is not c=,r=,...,p=")
        try:
            binding = _unb64(attributes[0][1])
            proof = _unb64(attributes[-1][1])
        except ValueError:
            raise Malformed("SCRAM client-final message holds invalid base64") from None
        if len(proof) != _KEY_LENGTH:
            raise Malformed("SCRAM proof has the wrong length")
        if binding != self._gs2_header:
            return rejected("SCRAM channel binding does not match the GS2 header")
        if attributes[1][1] != self._nonce:
            return rejected("SCRAM nonce does not match")
        without_proof = text[: text.rindex(",p=")]
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode("utf-8")
        stored_key = self._credentials.stored_key
        signature = _hmac(stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(_h(client_key), stored_key):
            return rejected()
        self._stage = _Stage.ACKNOWLEDGE
        verifier = _hmac(self._credentials.server_key, auth_message)
        return Challenge(data=f"v={_b64(verifier)}".encode("ascii"))


def _parse(text: str) -> list[tuple[str, str]]:
    try:
        return _attributes(text)
    except ValueError:
        raise Malformed("SCRAM message holds a malformed attribute") from None
