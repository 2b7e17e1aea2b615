# Theory of operation
# -------------------
# LOGIN (draft-murchison-sasl-login, never an RFC) is the oldest SMTP
# mechanism still in use.  The server prompts twice and the client answers
# with the bare values:
#
#     S: 334 VXNlcm5hbWU6        ("Username:")
#     C: dXNlcg==                ("user")
#     S: 334 UGFzc3dvcmQ6        ("Password:")
#     C: cGFzcw==                ("pass")
#
# The prompts are for humans: servers differ ("User Name\0" in the draft,
# "Username:" in practice), so the client answers by position, not by
# reading them.  Many clients send the user name as an initial response
# (``AUTH LOGIN dXNlcg==``), which the server accepts in place of the first
# answer.  The password crosses the wire as it is: ``plaintext``.  An empty
# user name or password, invalid UTF-8, a NUL in the password or a control
# character in the user name fails with 501 5.5.2.
from __future__ import annotations

from typing import ClassVar

from ._base import (
    Challenge,
    CheckPassword,
    ClientMechanism,
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

__all__ = ["LoginClient", "LoginServer", "USERNAME_PROMPT", "PASSWORD_PROMPT"]

#: The server's first challenge (``334 VXNlcm5hbWU6``).
USERNAME_PROMPT = b"Username:"
#: The server's second challenge (``334 UGFzc3dvcmQ6``).
PASSWORD_PROMPT = b"Password:"


class LoginClient(ClientMechanism):
    """The client side of LOGIN: user name, then password, one per challenge.

    It sends no initial response.  Raises ``ValueError`` for an empty user
    name or password, or one with a NUL in it.
    """

    name: ClassVar[str] = "LOGIN"
    plaintext: ClassVar[bool] = True
    strength: ClassVar[int] = 10

    def __init__(self, username: str, password: str) -> None:
        for what, value in (("user name", username), ("password", password)):
            if not isinstance(value, str):
                raise TypeError(f"LOGIN {what} must be a str, not {type(value).__name__}")
            if not value:
                raise ValueError(f"LOGIN {what} must not be empty")
            if "\0" in value:
                raise ValueError(f"LOGIN {what} must not contain NUL")
        self._answers = [username.encode("utf-8"), password.encode("utf-8")]
        self._sent = 0

    def initial_response(self) -> bytes | None:
        return None  # server-first

    def _respond(self, challenge: bytes) -> bytes:
        if self._sent == len(self._answers):
            raise SASLError("LOGIN: the server sent a third challenge")
        answer = self._answers[self._sent]
        self._sent += 1
        return answer

    @property
    def complete(self) -> bool:
        return self._sent == len(self._answers)


class LoginServer(ServerMechanism):
    """The server side of LOGIN: prompts, then asks :class:`CheckPassword`."""

    name: ClassVar[str] = "LOGIN"
    plaintext: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._username: str | None = None
        self._request: CheckPassword | None = None

    def _start(self, initial_response: bytes | None) -> Step:
        if initial_response is None:
            return Challenge(data=USERNAME_PROMPT)
        return self._respond(initial_response)

    def _respond(self, data: bytes) -> Step:
        if self._username is None:
            if not data:
                raise Malformed("LOGIN user name is empty")
            self._username = decode_identity("LOGIN user name", data)
            return Challenge(data=PASSWORD_PROMPT)
        self._request = CheckPassword(
            authcid=self._username, password=_password(data), authzid=None
        )
        return self._request

    def _resume(self, answer: object) -> Step:
        assert self._request is not None
        if expect_bool(self.name, answer):
            return Success(authcid=self._request.authcid, authzid=None)
        return rejected()


def _password(data: bytes) -> str:
    if not data:
        raise Malformed("LOGIN password is empty")
    text = decode_utf8("LOGIN password", data)
    if "\0" in text:
        raise Malformed("LOGIN password contains NUL")
    return text
