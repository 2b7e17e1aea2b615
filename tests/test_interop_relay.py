"""Real MTAs relaying into our servers: MTA-to-MTA traffic.

Theory of operation: a module fixture starts one of our servers per
adapter (blocking, asyncio, trio), each offering STARTTLS with the test
certificate, PIPELINING, CHUNKING and SMTPUTF8, and each with an
:class:`Inbox` handler that files every message by its Message-ID.  Two
relay MTAs are then started, configured to hand mail for ``sync.example``,
``asyncio.example`` and ``trio.example`` to the matching server:

* a second Postfix instance (``peerlib.start_postfix`` with ``main_cf``
  overrides: ``relayhost`` is our blocking server, ``transport_maps``
  sends the other two domains to the other two, and its SMTP client must
  use TLS);
* an Exim instance (``tests/peers/exim-relay.conf.in``: a ``manualroute``
  router to 127.0.0.1 and a port per domain, an ``smtp`` transport that
  requires TLS verified against the test CA and tries CHUNKING).

A test submits one message to a relay over SMTP (smtplib, cleartext on
loopback), waits (bounded) until our handler has it, and checks what
arrived: the envelope, the content (the relay's trace headers removed with
``peerlib.body_of``), the relay's EHLO name, and what the hop negotiated
as our server observed it.  Postfix's client pipelines MAIL, RCPT and DATA
in one write and never sends BDAT; Exim's pipelines too and sends BDAT when
CHUNKING is offered.  Both must have used STARTTLS.  The observations go to
the interoperability matrix.

Nothing leaves loopback: both relays route only the three domains above
to 127.0.0.1, and refuse every other recipient.
"""

from __future__ import annotations

import email.utils
import os
import re
import signal
import smtplib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import certs
import interop
import peerlib
from smtpproto import ServerConfig
from smtpproto.flows import Envelope, Handler, Session
from test_adapter_matrix import KINDS, running

SENDER = "sender@client.example"
#: Seconds a relayed message may take to reach our server.
RELAY_TIMEOUT = 60.0
POSTFIX_NAME = "mx.test.example"  # myhostname in tests/peers/postfix-setup.sh
EXIM_NAME = "exim-relay.test.example"  # primary_hostname in exim-relay.conf.in


@dataclass(frozen=True)
class Received:
    """One message our server accepted, and what its session had negotiated."""

    envelope: Envelope
    tls: bool
    auth_mechanism: str | None
    ehlo_name: str | None


class Inbox(Handler):
    """Files every message by Message-ID; :meth:`wait` blocks (bounded)
    until a given one arrives."""

    def __init__(self) -> None:
        self.messages: dict[str, list[Received]] = {}
        self.changed = threading.Condition()

    def message(self, session: Session, envelope: Envelope) -> None:
        content = envelope.content or b""
        found = re.search(rb"^Message-ID:\s*(<[^>\r\n]*>)", content, re.MULTILINE | re.IGNORECASE)
        key = found.group(1).decode("utf-8", "replace") if found else ""
        seen = Received(envelope, session.tls, session.auth_mechanism, session.ehlo_name)
        with self.changed:
            self.messages.setdefault(key, []).append(seen)
            self.changed.notify_all()

    def wait(self, message_id: str, why_not: Callable[[], str]) -> Received:
        """The message *message_id* once it arrived; fails after
        RELAY_TIMEOUT seconds, quoting *why_not()* (the relay's queue or log)."""
        deadline = time.monotonic() + RELAY_TIMEOUT
        with self.changed:
            while message_id not in self.messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{message_id} not relayed in {RELAY_TIMEOUT} s:\n{why_not()[-3000:]}"
                    )
                self.changed.wait(left)
            copies = self.messages[message_id]
            assert len(copies) == 1, f"{message_id} arrived {len(copies)} times"
            return copies[0]


#: A fourth server (the blocking adapter) that does not offer CHUNKING.
NO_CHUNKING = "nochunking"


@dataclass(frozen=True)
class Ours:
    """Our servers: each one's inbox and port, by adapter (and NO_CHUNKING)."""

    inboxes: dict[str, Inbox]
    ports: dict[str, int]


@pytest.fixture(scope="module")
def ours() -> Iterator[Ours]:
    """One server per adapter, STARTTLS offered, for the module's relays."""
    inboxes = {name: Inbox() for name in [*KINDS, NO_CHUNKING]}
    ports: dict[str, int] = {}
    with ExitStack() as stack:
        for name in inboxes:
            kind = "sync" if name == NO_CHUNKING else name
            config = ServerConfig(
                hostname=f"{name}.example", starttls=True, chunking=name != NO_CHUNKING
            )
            address = stack.enter_context(
                running(kind, inboxes[name], config=config, ssl_context=certs.server_context())
            )
            ports[name] = address[1]
        yield Ours(inboxes, ports)


@pytest.fixture(scope="module")
def postfix_relay(
    ours: Ours, peer_root: Path, peer_certs: tuple[Path, Path, Path]
) -> Iterator[peerlib.Peer]:
    """A second Postfix whose relayhost is our blocking server."""
    peerlib.require("Postfix", executables=["postfix", "postconf", "saslpasswd2"], root=True)
    ca, cert, key = peer_certs
    routes = ",".join(
        f"{kind}.example=smtp:[127.0.0.1]:{ours.ports[kind]}" for kind in KINDS if kind != "sync"
    )
    domains = ", ".join(f"{kind}.example" for kind in KINDS)
    peer = peerlib.start_postfix(
        peer_root / "postfix-relay", cert, key, ca,
        main_cf={
            # sync.example takes the relayhost; the others their transport.
            "relayhost": f"[127.0.0.1]:{ours.ports['sync']}",
            "relay_domains": domains,
            "transport_maps": f"inline:{{{routes}}}",
            "default_transport": "smtp",
            "relay_transport": "smtp",
            "smtp_tls_security_level": "encrypt",
            "smtp_tls_CAfile": str(ca),
            "smtp_tls_loglevel": "1",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            # No postlogd: with maillog_file set, every process logs through
            # one datagram socket, and postlogd, logging through it too,
            # deadlocks itself once net.unix.max_dgram_qlen (often 10)
            # messages wait there, as a busy start-up can queue.  A test
            # that times out shows the queue (postqueue -p) instead.
            "maillog_file": "",
        },
    )
    master = peer.base / "queue" / "pid" / "master.pid"
    pid = int(master.read_text().strip()) if master.exists() else None
    try:
        yield peer
    finally:
        peer.stop()
        # The master runs in a session of its own, out of reach of a stop
        # by the start-fg process's group: should it outlive the stop, end
        # it by its pid (checked to be this instance's master).
        if pid is not None and is_our_master(pid, peer.base / "conf"):
            os.kill(pid, signal.SIGKILL)


def is_our_master(pid: int, conf: Path) -> bool:
    """Is *pid* still the Postfix master of the instance configured in *conf*?"""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"master" in command and f"MAIL_CONFIG={conf}".encode() in environment.split(b"\0")


@pytest.fixture(scope="module")
def exim_relay(
    ours: Ours, peer_root: Path, peer_certs: tuple[Path, Path, Path]
) -> Iterator[peerlib.Peer]:
    """An Exim that routes each adapter's domain to that server."""
    peerlib.require("Exim", exim=True, root=True)
    ca, cert, key = peer_certs
    text = (peerlib.SCRIPTS / "exim-relay.conf.in").read_text(encoding="ascii")
    for name, port in ours.ports.items():
        text = text.replace(f"@PORT_{name.upper()}@", str(port))
    template = peer_root / "exim-relay.conf.in"
    template.write_text(text.replace("@CA@", str(ca)), encoding="ascii")
    peer = peerlib.start_exim(peer_root / "exim-relay", cert, key, ca, template=template)
    yield peer
    peer.stop()


def new_message(scenario: str, recipient: str, *, utf8: bool = False) -> tuple[str, bytes]:
    """``(message_id, message)``: a message with dot-leading lines and, with
    *utf8*, UTF-8 in a header and the body."""
    message_id = f"<{uuid.uuid4().hex}@client.example>"
    subject = f"relay {scenario}" + (" caf\u00e9" if utf8 else "")
    lines = [
        f"From: <{SENDER}>",
        f"To: <{recipient}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: {message_id}",
        "",
        "First line.",
        ".A line that starts with a dot.",
        ".",
        "Gr\u00fc\u00dfe." if utf8 else "Greetings.",
    ]
    return message_id, ("\r\n".join(lines) + "\r\n").encode("utf-8")


def submit(relay: peerlib.Peer, sender: str, recipient: str, message: bytes, *, utf8: bool) -> None:
    """Hand *message* to *relay* over SMTP (cleartext, on loopback)."""
    options = ["SMTPUTF8", "BODY=8BITMIME"] if utf8 else []
    with smtplib.SMTP(relay.host, relay.port, local_hostname="client.example", timeout=30) as smtp:
        refused = smtp.sendmail(sender, [recipient], message, mail_options=options)
    assert refused == {}


@cache
def version_of(command: tuple[str, ...], pattern: str) -> str:
    """The first match of *pattern* in what *command* prints."""
    result = subprocess.run(command, capture_output=True, timeout=30, check=False)
    found = re.search(pattern, (result.stdout + result.stderr).decode(errors="replace"))
    assert found is not None, f"no version from {command}"
    return found.group(1)


def record(
    request: pytest.FixtureRequest, peer: str, kind: str, scenario: str, seen: Received
) -> None:
    """Write what this hop negotiated, as our server saw it, to the matrix."""
    interop.record(
        peer=peer,
        direction=interop.SERVER,
        ours=kind,
        scenario=scenario,
        test=request.node.nodeid,
        tls="STARTTLS" if seen.tls else "",
        auth=seen.auth_mechanism or "",
        pipelining=seen.envelope.pipelined,
        chunking=seen.envelope.chunked,
        smtputf8=seen.envelope.smtputf8,
    )


def postfix_queue(relay: peerlib.Peer) -> Callable[[], str]:
    """What Postfix's queue holds (with each deferral's reason)."""

    def show() -> str:
        command = ["postqueue", "-c", str(relay.base / "conf"), "-p"]
        result = subprocess.run(command, capture_output=True, timeout=30, check=False)
        return (result.stdout + result.stderr).decode(errors="replace")

    return show


def exim_log(relay: peerlib.Peer) -> Callable[[], str]:
    """Exim's main log."""
    path = relay.base / "log" / "mainlog"
    return lambda: path.read_text(errors="replace") if path.exists() else "(no log)"


def relayed(
    relay: peerlib.Peer,
    inbox: Inbox,
    why_not: Callable[[], str],
    kind: str,
    scenario: str,
    utf8: bool,
) -> tuple[Received, bytes, str, str]:
    """Submit one message for *kind*'s domain; wait until our server has it.
    Returns what arrived, the message, its sender and its recipient."""
    sender = "pel\u00e9@client.example" if utf8 else SENDER
    recipient = f"{'jos' + chr(0xE9) if utf8 else 'rcpt'}@{kind}.example"
    message_id, message = new_message(scenario, recipient, utf8=utf8)
    submit(relay, sender, recipient, message, utf8=utf8)
    return inbox.wait(message_id, why_not), message, sender, recipient


SCENARIOS = {"STARTTLS": False, "STARTTLS + SMTPUTF8": True}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_postfix_relays_into_our_server(
    kind: str,
    scenario: str,
    ours: Ours,
    postfix_relay: peerlib.Peer,
    request: pytest.FixtureRequest,
) -> None:
    utf8 = SCENARIOS[scenario]
    seen, message, sender, recipient = relayed(
        postfix_relay, ours.inboxes[kind], postfix_queue(postfix_relay), kind, scenario, utf8
    )
    envelope = seen.envelope
    assert envelope.sender == sender
    assert envelope.recipient_addresses == [recipient]
    assert envelope.content is not None
    assert peerlib.body_of(envelope.content) == message
    assert envelope.content.startswith(b"Received: ")  # Postfix's own trace header
    assert seen.ehlo_name == POSTFIX_NAME
    assert seen.tls  # smtp_tls_security_level = encrypt
    assert seen.auth_mechanism is None
    # Postfix's client writes MAIL, RCPT and DATA in one batch, and never BDAT.
    assert envelope.pipelined
    assert not envelope.chunked
    assert envelope.smtputf8 is utf8
    if utf8:
        assert envelope.mail.parameters.get("BODY") == "8BITMIME"
    version = version_of(("postconf", "-d", "-h", "mail_version"), r"(\S+)")
    record(request, f"Postfix {version}", kind, f"relay: {scenario}", seen)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("kind", KINDS)
def test_exim_relays_into_our_server(
    kind: str,
    scenario: str,
    ours: Ours,
    exim_relay: peerlib.Peer,
    request: pytest.FixtureRequest,
) -> None:
    utf8 = SCENARIOS[scenario]
    seen, message, sender, recipient = relayed(
        exim_relay, ours.inboxes[kind], exim_log(exim_relay), kind, scenario, utf8
    )
    envelope = seen.envelope
    assert envelope.sender == sender
    assert envelope.recipient_addresses == [recipient]
    assert envelope.content is not None
    assert peerlib.body_of(envelope.content) == message
    assert envelope.content.startswith(b"Received: ")
    assert seen.ehlo_name == EXIM_NAME
    assert seen.tls  # hosts_require_tls = *
    assert seen.auth_mechanism is None
    # Exim sends BDAT when CHUNKING is offered, pipelined with MAIL and RCPT.
    assert envelope.chunked
    assert envelope.pipelined
    assert envelope.smtputf8 is utf8
    record(request, exim_version(), kind, f"relay: {scenario}", seen)


def exim_version() -> str:
    """The peer and its version, as the matrix names it."""
    exim = peerlib.exim_binary()
    assert exim is not None
    return "Exim " + version_of((exim, "-bV", "-C", "/dev/null"), r"Exim version (\S+)")


def test_exim_sends_data_when_chunking_is_not_offered(
    ours: Ours, exim_relay: peerlib.Peer, request: pytest.FixtureRequest
) -> None:
    # The same relay and transport (hosts_try_chunking = *), to a server of
    # ours that does not offer CHUNKING: DATA, dot-stuffed (RFC 3030 §2).
    seen, message, sender, recipient = relayed(
        exim_relay, ours.inboxes[NO_CHUNKING], exim_log(exim_relay), NO_CHUNKING,
        "no CHUNKING", False,
    )
    assert seen.envelope.recipient_addresses == [recipient]
    assert seen.envelope.content is not None
    assert peerlib.body_of(seen.envelope.content) == message
    assert seen.tls and seen.envelope.pipelined
    assert not seen.envelope.chunked
    record(request, exim_version(), "sync", "relay: STARTTLS, CHUNKING not offered", seen)
