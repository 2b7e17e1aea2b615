"""LIMITS, MT-PRIORITY, DELIVERBY, FUTURERELEASE: typed MAIL parameters."""

from __future__ import annotations

import pytest

from smtpproto import (
    ClientConnection,
    CommandRejected,
    Ehlo,
    LocalProtocolError,
    Mail,
    Rcpt,
    ServerConfig,
)
from smtpproto.extensions import Capabilities, deliverby, futurerelease, mtpriority
from smtpproto.extensions import Limits, DeliverBy, FutureRelease, MtPriority

from helpers import replies_of, server_events

ALL_ON = ServerConfig(mt_priority=True, deliverby=True, futurerelease=True, max_transactions=5)


def mail_result(params: bytes, config: ServerConfig = ALL_ON) -> tuple[object, int]:
    events, out = server_events(b"EHLO c\r\nMAIL FROM:<a@example.org> " + params + b"\r\n", config)
    return events[-1], replies_of(out)[-1]


@pytest.mark.parametrize(
    "params,expected",
    [
        (b"MT-PRIORITY=3", 3),
        (b"MT-PRIORITY=-9", -9),
        (b"MT-PRIORITY=+9", 9),
    ],
)
def test_mt_priority_valid(params: bytes, expected: int) -> None:
    event, code = mail_result(params)
    assert code == 250 and isinstance(event, Mail)
    assert mtpriority.priority(event) == expected


@pytest.mark.parametrize("params", [b"MT-PRIORITY=10", b"MT-PRIORITY", b"MT-PRIORITY=x"])
def test_mt_priority_invalid(params: bytes) -> None:
    event, code = mail_result(params)
    assert code == 501 and isinstance(event, CommandRejected)


@pytest.mark.parametrize(
    "params,expected",
    [(b"BY=120;R", (120, "R", False)), (b"BY=-10;nT", (-10, "N", True)), (b"BY=0;N", (0, "N", False))],
)
def test_deliverby_valid(params: bytes, expected: tuple[int, str, bool]) -> None:
    event, code = mail_result(params)
    assert code == 250 and isinstance(event, Mail)
    assert deliverby.deliver_by(event) == expected


@pytest.mark.parametrize("params", [b"BY=0;R", b"BY=-5;R", b"BY=10", b"BY=10;X", b"BY=1234567890;N"])
def test_deliverby_invalid(params: bytes) -> None:
    assert mail_result(params)[1] == 501


@pytest.mark.parametrize(
    "params,expected",
    [
        (b"HOLDFOR=3600", ("HOLDFOR", "3600")),
        (b"HOLDUNTIL=2026-12-01T10:00:00Z", ("HOLDUNTIL", "2026-12-01T10:00:00Z")),
        (b"HOLDUNTIL=2026-12-01T10:00:00.5+02:00", ("HOLDUNTIL", "2026-12-01T10:00:00.5+02:00")),
    ],
)
def test_futurerelease_valid(params: bytes, expected: tuple[str, str]) -> None:
    event, code = mail_result(params)
    assert code == 250 and isinstance(event, Mail)
    assert futurerelease.hold(event) == expected


@pytest.mark.parametrize(
    "params",
    [
        b"HOLDFOR=abc",
        b"HOLDFOR=99999999",  # over the advertised interval
        b"HOLDUNTIL=tomorrow",
        b"HOLDUNTIL=2026-13-01T10:00:00Z",
        b"HOLDFOR=10 HOLDUNTIL=2026-12-01T10:00:00Z",
    ],
)
def test_futurerelease_invalid(params: bytes) -> None:
    assert mail_result(params)[1] == 501


def test_typed_parameters_absent() -> None:
    mail = Mail(reverse_path="a@example.org")
    assert mtpriority.priority(mail) is None
    assert deliverby.deliver_by(mail) is None
    assert futurerelease.hold(mail) is None


def test_parameters_refused_when_not_offered() -> None:
    for params in (b"MT-PRIORITY=1", b"BY=10;N", b"HOLDFOR=1"):
        assert mail_result(params, ServerConfig())[1] == 555


def test_ehlo_lines() -> None:
    _, out = server_events(b"EHLO c\r\n", ALL_ON)
    text = out.decode()
    assert "250-LIMITS RCPTMAX=1000 MAILMAX=5\r\n" in text
    assert "250-MT-PRIORITY\r\n" in text and "250-DELIVERBY\r\n" in text
    assert "250-FUTURERELEASE 604800 2099-12-31T23:59:59Z\r\n" in text
    assert MtPriority("MIXER").ehlo_line() == "MT-PRIORITY MIXER"
    assert DeliverBy(60).ehlo_line() == "DELIVERBY 60"
    assert Limits().ehlo_line() == "LIMITS"
    assert "Limits(rcptmax=None" in repr(Limits())
    assert "FutureRelease(" in repr(FutureRelease())


def test_server_enforces_mailmax() -> None:
    config = ServerConfig(max_transactions=2)
    data = b"EHLO c\r\n" + b"MAIL FROM:<a@example.org>\r\nRSET\r\n" * 3
    _, out = server_events(data, config)
    assert replies_of(out)[1:] == [250, 250, 250, 250, 452, 250]
    with pytest.raises(ValueError, match="max_transactions"):
        ServerConfig(max_transactions=0)


def limited_client(limits: str) -> ClientConnection:
    client = ClientConnection()
    client.receive_data(f"220 hi\r\n250-s\r\n250-PIPELINING\r\n250 LIMITS {limits}\r\n".encode())
    client.next_event()
    client.send(Ehlo(domain="c"))
    client.next_event()
    return client


def test_client_honours_rcptmax() -> None:
    client = limited_client("RCPTMAX=2 MAILMAX=2")
    assert client.capabilities.limits == {"RCPTMAX": 2, "MAILMAX": 2}
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Rcpt(forward_path="c@example.org"))
    with pytest.raises(LocalProtocolError, match="RCPTMAX=2"):
        client.send(Rcpt(forward_path="d@example.org"))


def test_client_honours_mailmax() -> None:
    from smtpproto import Rset

    client = limited_client("MAILMAX=1")
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rset())
    with pytest.raises(LocalProtocolError, match="MAILMAX=1"):
        client.send(Mail(reverse_path="a@example.org"))


def test_malformed_limits_are_ignored() -> None:
    caps = limited_client("RCPTMAX=0 MAILMAX=abc FOO RCPTDOMAINMAX=3").capabilities
    assert caps.limits == {"RCPTDOMAINMAX": 3}
    assert Capabilities.none().limits == {}
