# Theory of operation
# -------------------
# AUTH (RFC 4954).  The EHLO line lists the SASL mechanisms offered; the
# server offers it only under TLS unless configured to allow cleartext
# (PROTOCOL.md attack class 8).  MAIL may carry ``AUTH=`` (§5): the
# xtext-encoded mailbox of the message's original submitter, or ``<>``
# when it is unknown; the server honours it only from an authenticated,
# trusted client, which is the application's judgement.
from __future__ import annotations

from .._events import Mail
from .._syntax import GrammarError, xtext_decode
from ._base import Extension

__all__ = ["AuthExtension", "mail_auth"]


class AuthExtension(Extension):
    """AUTH (RFC 4954) with the mechanisms offered, strongest first."""

    keyword = "AUTH"
    mail_parameters = frozenset({"AUTH"})
    # RFC 4954 §5: "the maximum line length of a MAIL FROM command is
    # increased by 500 characters by the possible addition of the AUTH
    # keyword and value".
    mail_line_extra = 500

    def __init__(self, mechanisms: tuple[str, ...] = ()) -> None:
        self.mechanisms = tuple(m.upper() for m in mechanisms)

    def ehlo_line(self) -> str:
        return " ".join(("AUTH", *self.mechanisms))

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None:
            raise GrammarError("AUTH= needs a mailbox or <>", 501, "5.5.4")
        if value != "<>":
            xtext_decode(value)

    def __repr__(self) -> str:
        return f"AuthExtension({self.mechanisms!r})"


def mail_auth(mail: Mail) -> str | None:
    """The decoded ``AUTH=`` of *mail*: ``""`` for ``<>``, None if absent."""
    value = mail.parameters.get("AUTH")
    if value is None:
        return None
    return "" if value == "<>" else xtext_decode(value)
