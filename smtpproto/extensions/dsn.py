# Theory of operation
# -------------------
# DSN, Delivery Status Notifications (RFC 3461).  Four parameters:
#
#   MAIL  RET=FULL|HDRS          what to return in a bounce (§4.3)
#   MAIL  ENVID=xtext            the sender's envelope id, <= 100 chars (§4.4)
#   RCPT  NOTIFY=NEVER | 1#(SUCCESS / FAILURE / DELAY)           (§4.1)
#   RCPT  ORCPT=addr-type ";" xtext   the original recipient (§4.2)
#
# Values stay xtext-encoded in the events (the wire form); the functions at
# the bottom decode them for the application and build them for a client.
# "Each of these parameters may appear at most once" is enforced by the
# generic parameter parser (duplicates are 501).
from __future__ import annotations

import re

from .._events import Mail, Parameters, Rcpt
from .._syntax import GrammarError, quoted, xtext_decode, xtext_encode
from ._base import Extension

__all__ = ["Dsn", "mail_parameters", "rcpt_parameters", "ret", "envid", "notify", "orcpt"]

_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# RFC 3461 §4.2: addr-type = atom (RFC 822), e.g. "rfc822" or "utf-8".
_ADDR_TYPE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_MAX_ENVID = 100
_MAX_ORCPT = 500


class Dsn(Extension):
    """DSN (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT."""

    keyword = "DSN"
    mail_parameters = frozenset({"RET", "ENVID"})
    rcpt_parameters = frozenset({"NOTIFY", "ORCPT"})
    # RFC 3461 §5: MAIL lines grow by up to 110 characters, RCPT by 500.
    mail_line_extra = 110
    rcpt_line_extra = 500

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        if value is None:
            raise GrammarError(f"{name} needs a value", 501, "5.5.4")
        if name == "RET":
            if value.upper() not in ("FULL", "HDRS"):
                raise GrammarError(f"RET must be FULL or HDRS, not {quoted(value)}", 501, "5.5.4")
        elif name == "ENVID":
            decoded = xtext_decode(value)
            if len(decoded) > _MAX_ENVID or not decoded.isascii():
                raise GrammarError("ENVID must be at most 100 ASCII characters", 501, "5.5.4")
        elif name == "NOTIFY":
            items = value.upper().split(",")
            if items != ["NEVER"] and (
                not set(items) <= _NOTIFY_VALUES or len(set(items)) != len(items)
            ):
                raise GrammarError(
                    "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY", 501, "5.5.4"
                )
        else:  # ORCPT
            addr_type, semicolon, address = value.partition(";")
            if not semicolon or _ADDR_TYPE_RE.fullmatch(addr_type) is None or not address:
                raise GrammarError("ORCPT must be addr-type;xtext", 501, "5.5.4")
            if len(value) > _MAX_ORCPT:
                raise GrammarError("ORCPT longer than 500 characters", 501, "5.5.4")
            xtext_decode(address)


def mail_parameters(*, ret: str | None = None, envid: str | None = None) -> dict[str, str]:
    """Build the DSN MAIL parameters (ENVID is xtext-encoded here)."""
    params: dict[str, str] = {}
    if ret is not None:
        params["RET"] = ret.upper()
    if envid is not None:
        params["ENVID"] = xtext_encode(envid)
    for name, value in params.items():
        Dsn.check_parameter(name, value)
    return params


def rcpt_parameters(
    *, notify: tuple[str, ...] | None = None, orcpt: tuple[str, str] | None = None
) -> dict[str, str]:
    """Build the DSN RCPT parameters; ``orcpt`` is ``(addr_type, address)``."""
    params: dict[str, str] = {}
    if notify is not None:
        params["NOTIFY"] = ",".join(item.upper() for item in notify)
    if orcpt is not None:
        params["ORCPT"] = f"{orcpt[0]};{xtext_encode(orcpt[1])}"
    for name, value in params.items():
        Dsn.check_parameter(name, value)
    return params


def _get(params: Parameters, name: str) -> str | None:
    return params.get(name)


def ret(mail: Mail) -> str | None:
    """``RET`` of *mail*, upper-cased, or None."""
    value = _get(mail.parameters, "RET")
    return None if value is None else value.upper()


def envid(mail: Mail) -> str | None:
    """``ENVID`` of *mail*, xtext-decoded, or None."""
    value = _get(mail.parameters, "ENVID")
    return None if value is None else xtext_decode(value)


def notify(rcpt: Rcpt) -> frozenset[str] | None:
    """``NOTIFY`` of *rcpt* as a set of upper-cased words, or None."""
    value = _get(rcpt.parameters, "NOTIFY")
    return None if value is None else frozenset(value.upper().split(","))


def orcpt(rcpt: Rcpt) -> tuple[str, str] | None:
    """``ORCPT`` of *rcpt* as ``(addr_type, decoded address)``, or None."""
    value = _get(rcpt.parameters, "ORCPT")
    if value is None:
        return None
    addr_type, _, address = value.partition(";")
    return addr_type, xtext_decode(address)
