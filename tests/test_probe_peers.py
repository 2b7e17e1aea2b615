"""The hostile-peer probe against real MTAs (Postfix and Exim).

Issue: the probe runs against our servers (``tests/test_probe.py``, where
every attack must be safe) and, where the peers are installed, against
Postfix and Exim, recording what they did.  They are not expected to pass
everything; what is checked here is that the probe copes with a real MTA
(every attack gets a verdict, none crashes the probe, the server is
reachable throughout) and that its findings on them are the ones the
documentation reports (``docs/probe-peers.json``, rendered on the probe
page).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest

import peerlib
from smtpproto.testing.probe import ATTACKS, ProbeReport, Verdict, run_probe

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "probe-peers.json"


def probe(peer: peerlib.Peer) -> ProbeReport:
    assert peer.ca is not None
    context = ssl.create_default_context(cafile=str(peer.ca))
    return run_probe(
        peer.host, peer.port, mail_from="probe@client.example", rcpt="probe@test.example",
        helo="probe.example", tls_context=context, server_hostname="localhost",
        username=peer.user, password=peer.password, timeout=5.0,
    )


def record(name: str, report: ProbeReport) -> None:
    """Merge this peer's verdicts into docs/probe-peers.json (sorted; no
    timings or reasons, which carry queue ids, so the file changes only
    when a verdict does)."""
    data = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    data[name] = {
        result.name: {"class": result.attack_class, "verdict": result.verdict.value}
        for result in report.results
    }
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if not RESULTS.exists() or RESULTS.read_text(encoding="utf-8") != text:
        RESULTS.write_text(text, encoding="utf-8")


def check(report: ProbeReport) -> None:
    assert report.error is None, report.error
    assert report.greeting is not None and report.greeting.startswith("220")
    assert [r.name for r in report.results] == [a.name for a in ATTACKS]
    for result in report.results:
        assert result.reason, result
        # A verdict the probe could not reach on a well-configured MTA
        # would mean the probe, not the MTA, failed.
        assert "probe error" not in result.reason.lower(), result
    assert report.count(Verdict.SAFE) > len(ATTACKS) // 2, report.format_table()


@pytest.mark.parametrize("fixture", ["postfix", "exim"])
def test_probe_against_real_mta(fixture: str, request: pytest.FixtureRequest) -> None:
    peer: peerlib.Peer = request.getfixturevalue(fixture)
    report = probe(peer)
    check(report)
    # Both MTAs answer STARTTLS and take the test login: the STARTTLS and
    # AUTH attacks were really run, not found inapplicable.
    ran = {r.attack_class for r in report.results if r.verdict is not Verdict.NOT_APPLICABLE}
    assert {1, 3, 5, 6, 7}.issubset(ran), report.format_table()
    record(f"{peer.name}", report)
