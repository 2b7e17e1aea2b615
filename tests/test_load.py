"""Load and faults on the asyncio and trio servers, over loopback.

Each test runs the server under test in a process of its own
(``loadtools.ServerProcess``) and drives it from a lean asyncio client in
the test's process, so the load generator does not starve the server and
the server's memory is measured alone.  Everything is bounded in count
and in time (``asyncio.wait_for`` around every scenario and every wait;
``trio.fail_after`` in-process), and the assertions are about outcomes:
which replies came, which messages the handler committed, whether the
server still serves; never how long anything took.

* 1,000 sessions held at once, then each delivers one message: each is
  committed exactly once, byte for byte, and each client got its 250.
* Slow senders (slower than the command timeout, and a trickle faster
  than it that only the session cap stops) get 421 4.4.2 and are closed,
  while normal sessions running beside them all deliver.
* 10,000 sessions cut at random points (seeded), a FIN or a RST: only a
  message whose end (final dot, or last BDAT chunk) was sent may be
  committed, nothing partial is, and the server still serves.
* 100 connections sending endless lines: the server's traced memory
  stays under a bound derived from its limits, those connections get 500
  (or 552, or 421 and a close), and a normal session still works.
* A shutdown in the middle of such a load: every message answered 250 was
  committed, none whose end was not sent was, and every session's
  ``disconnect`` hook ran (the forced-cancel gap, fixed in both adapters,
  also has an in-process test of its own).

The figures (sessions held, faults injected, bytes, memory, losses) are
printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio  # type: ignore[import-untyped, unused-ignore]

from smtpproto import ServerConfig
from smtpproto.asyncio import AsyncSMTPClient, AsyncSMTPServer
from smtpproto.flows import ClientOptions, Envelope, Handler, Session, TLSMode, errors
from smtpproto.trio import TrioSMTPServer

import certs
from loadtools import Conn, ServerProcess, bdat_section, data_section, make_message, raise_open_files, sha256

pytestmark = pytest.mark.load

T = TypeVar("T")
BACKENDS = ["asyncio", "trio"]
SENDER = b"load@client.example"
# Seconds any one scenario may take before it counts as hung.
SCENARIO_LIMIT = 150.0


def run(scenario: Callable[[], Coroutine[Any, Any, T]], limit: float = SCENARIO_LIMIT) -> T:
    """Run an asyncio client *scenario*, failing it after *limit* seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), limit)

    return asyncio.run(bounded())


def figures(name: str, backend: str, **values: object) -> None:
    """Print a test's figures for the report (visible with ``-s``)."""
    print(f"\nFIGURES {name}[{backend}]: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def settle(server: ServerProcess, limit: float = 30.0) -> dict[str, Any]:
    """The server's counters once every session it accepted has ended
    (the disconnect hook runs after the last reply went out)."""

    async def wait() -> dict[str, Any]:
        while True:
            stats = await asyncio.to_thread(server.stats)
            if stats["open"] == 0:
                return stats
            await asyncio.sleep(0.05)

    return run(wait, limit)


class Pacer:
    """Keeps the load generator within reach of the server: a new
    connection may start only while fewer than *unaccepted* started ones
    are still waiting for the server's accept loop, and fewer than
    *unfinished* have not ended there.

    Clients that cut a session may close before the server even accepted
    it, so a bound on the clients alone does not bound the server's
    backlog: past the listen queue (128), the kernel drops handshakes and
    retries them with a growing back-off, and a client can then wait half
    a minute for its greeting.  The counts come from the server's handler
    (``connect`` and ``disconnect`` hooks), polled in the background."""

    def __init__(self, server: ServerProcess, unaccepted: float = 96, unfinished: float = 400) -> None:
        self.server = server
        self.unaccepted = unaccepted
        self.unfinished = unfinished
        self.started = 0
        self.stats: dict[str, Any] = server.stats()
        self.base = self.stats["connects"], self.stats["disconnects"]
        self._changed = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            self.stats = await asyncio.to_thread(self.server.stats)
            self._changed.set()
            await asyncio.sleep(0.01)

    def _room(self) -> bool:
        connects = self.stats["connects"] - self.base[0]
        disconnects = self.stats["disconnects"] - self.base[1]
        return bool(self.started - connects < self.unaccepted and self.started - disconnects < self.unfinished)

    async def admit(self) -> None:
        """Wait until the server has room for one more connection."""
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(60):
                while not self._room():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the server made no progress for 60 s: {self.stats}") from None
        self.started += 1

    def release(self) -> None:
        """Let every waiting and later connection start (the server no
        longer accepts, so its counts stop moving)."""
        self.unaccepted = self.unfinished = math.inf
        self._changed.set()

    async def stop(self) -> None:
        """Stop polling."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


def assert_clean_log(server: ServerProcess) -> None:
    """The server logged no failure (a session or hook that raised is
    logged with its traceback)."""
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-5000:]


def expect(reply: bytes, code: bytes, what: str) -> None:
    """Fail with the reply when it does not start with *code*."""
    assert reply.startswith(code), f"{what}: expected {code!r}, got {reply!r}"


async def greeted(address: tuple[str, int], gate: asyncio.Semaphore) -> tuple[Conn, bytes]:
    """Connect and read the greeting, holding *gate* (a few at a time:
    the listen backlog is 128) until the server has accepted the
    connection and greeted it; return the connection and the greeting."""
    async with gate:
        conn = await Conn.open(address)
        try:
            greeting = await conn.reply()
            expect(greeting, b"220 ", "greeting")
        except BaseException:
            await conn.close()
            raise
    return conn, greeting


async def deliver_one(address: tuple[str, int], tag: str, content: bytes) -> None:
    """A normal session from greeting to QUIT that delivers *content*."""
    conn = await Conn.open(address)
    try:
        expect(await conn.reply(), b"220 ", "greeting")
        await conn.write(b"EHLO load.example\r\n")
        expect(await conn.reply(), b"250", "EHLO")
        await conn.write(b"MAIL FROM:<" + SENDER + b">\r\nRCPT TO:<" + tag.encode() + b"@server.example>\r\nDATA\r\n")
        for code in (b"250 ", b"250 ", b"354 "):
            expect(await conn.reply(), code, "transaction")
        await conn.write(data_section(content))
        expect(await conn.reply(), b"250 ", "end of data")
        await conn.write(b"QUIT\r\n")
        expect(await conn.reply(), b"221 ", "QUIT")
    finally:
        await conn.close()


def check_deliveries(deliveries: list[dict[str, Any]], sent: dict[str, bytes]) -> collections.Counter[str]:
    """Every committed message is one that was sent, byte for byte, to its
    own recipient; return how often each tag was committed."""
    counts: collections.Counter[str] = collections.Counter()
    for record in deliveries:
        tag = record["id"]
        assert tag in sent, f"a message nobody sent was committed: {record}"
        assert record["sha256"] == sha256(sent[tag]) and record["size"] == len(sent[tag]), (
            f"{tag} was committed altered or partial: {record['size']} of {len(sent[tag])} octets"
        )
        assert record["recipients"] == [f"{tag}@server.example"], record
        counts[tag] += 1
    return counts


# -- 1,000 sessions at once ------------------------------------------------------------

CONCURRENT = 1000


async def concurrent_sessions(address: tuple[str, int], messages: dict[str, bytes]) -> dict[str, list[bytes]]:
    """Open every session (greeting and EHLO answered), and only once all
    are held let each deliver its message; return each one's replies."""
    held = 0
    all_held = asyncio.Event()
    opening = asyncio.Semaphore(64)  # the listen backlog is 128

    async def one(tag: str, content: bytes) -> tuple[str, list[bytes]]:
        nonlocal held
        conn, greeting = await greeted(address, opening)
        try:
            replies = [greeting]
            await conn.write(b"EHLO load.example\r\n")
            replies.append(await conn.reply())
            expect(replies[1], b"250", f"{tag} EHLO")
            held += 1
            if held == len(messages):
                all_held.set()
            await asyncio.wait_for(all_held.wait(), 120)
            await conn.write(
                b"MAIL FROM:<" + SENDER + b">\r\nRCPT TO:<" + tag.encode() + b"@server.example>\r\nDATA\r\n"
            )
            replies += [await conn.reply() for _ in range(3)]
            await conn.write(data_section(content))
            replies.append(await conn.reply())
            await conn.write(b"QUIT\r\n")
            replies.append(await conn.reply())
            return tag, replies
        finally:
            await conn.close()

    done = await asyncio.gather(*(one(tag, content) for tag, content in messages.items()))
    return dict(done)


@pytest.mark.parametrize("backend", BACKENDS)
def test_thousand_concurrent_sessions_deliver_every_message_once(backend: str, tmp_path: Path) -> None:
    # Each side (this process, and the server process, which inherits the
    # limit) holds a descriptor per session.
    assert raise_open_files(CONCURRENT + 256) >= CONCURRENT + 256, "RLIMIT_NOFILE's hard limit is too low"
    rng = random.Random(1000)
    messages = {f"c{i}": make_message(f"c{i}", rng, rng.randint(200, 4000)) for i in range(CONCURRENT)}
    with ServerProcess(backend, tmp_path / "server.log", max_connections=CONCURRENT + 100) as server:
        replies = run(lambda: concurrent_sessions(server.address, messages))
        stats = settle(server)
        counts = check_deliveries(server.deliveries(), messages)
        assert_clean_log(server)
    for tag, got in replies.items():
        codes = [reply[:4] for reply in got]
        assert codes == [b"220 ", b"250-", b"250 ", b"250 ", b"354 ", b"250 ", b"221 "], (tag, got)
    assert counts == collections.Counter(messages.keys()), "a message was lost or delivered twice"
    assert stats["peak_open"] >= CONCURRENT, stats  # the server held them all at once
    assert stats["connects"] == stats["disconnects"] == CONCURRENT, stats
    figures(
        "concurrent", backend, sessions_held_at_once=stats["peak_open"], delivered=sum(counts.values()),
        lost=len(messages) - len(counts), duplicated=sum(counts.values()) - len(counts),
    )


# -- slow senders -----------------------------------------------------------------------

# The server gives each read 1 s and a whole session 5 s (421 4.4.2 after).
SLOW_TIMEOUTS = {"command": 1.0, "data": 1.0}
SLOW_SESSION_CAP = 5.0


@dataclass
class SlowOutcome:
    """What a slow sender saw."""

    transcript: bytes = b""
    sent: int = 0
    ended_by_server: bool = False


async def slow_sender(
    address: tuple[str, int], setup: bytes, trickle: bytes, interval: float, started: asyncio.Event | None = None
) -> SlowOutcome:
    """After the greeting, send *setup* at once (pipelined), set
    *started*, then *trickle* a byte every *interval* seconds until the
    server ends the session or the bytes run out; collect what the server
    said."""
    outcome = SlowOutcome()
    conn = await Conn.open(address)
    try:
        outcome.transcript = await conn.reply()
    except BaseException:
        await conn.close()
        raise
    closed = asyncio.Event()

    async def listen() -> None:
        while True:
            reply = await conn.reply(timeout=60)
            outcome.transcript += reply
            if not reply.endswith(b"\n"):
                closed.set()
                return

    listener = asyncio.create_task(listen())
    try:
        await conn.write(setup)
        if started is not None:
            started.set()
        for index in range(len(trickle)):
            if closed.is_set():
                break
            try:
                await conn.write(trickle[index : index + 1])
            except ConnectionError:
                break
            outcome.sent += 1
            try:
                await asyncio.wait_for(closed.wait(), interval)
            except TimeoutError:
                pass
        await asyncio.wait_for(asyncio.shield(listener), 30)
        outcome.ended_by_server = closed.is_set() and outcome.sent < len(trickle)
        return outcome
    finally:
        listener.cancel()
        await conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_slow_senders_time_out_without_starving_others(backend: str, tmp_path: Path) -> None:
    transaction = b"EHLO slow.example\r\nMAIL FROM:<" + SENDER + b">\r\nRCPT TO:<slow@server.example>\r\nDATA\r\n"
    content = b"Subject: slow\r\n\r\n" + b"x" * 200 + b"\r\n"
    # (name, setup sent at once, bytes then sent one at a time, seconds between them)
    kinds = [
        # Slower than the 1 s the server gives each read: the command timeout.
        ("first-command", b"", b"EHLO slow.example\r\n", 2.0),
        ("mid-command", b"EHLO slow.example\r\n", b"MAIL FROM:<" + SENDER + b">\r\n", 2.0),
        ("mid-data", transaction, content, 2.0),
        # Two bytes a second beat the per-read timeout: the session cap stops them.
        ("trickle-commands", b"", b"EHLO slow.example\r\n" + b"NOOP\r\n" * 20, 0.5),
        ("trickle-data", transaction, content, 0.5),
    ]
    per_kind = 12
    normal = 200
    rng = random.Random(7)
    messages = {f"n{i}": make_message(f"n{i}", rng, rng.randint(200, 3000)) for i in range(normal)}

    async def scenario() -> tuple[list[tuple[str, SlowOutcome]], int]:
        started = [asyncio.Event() for _ in range(per_kind * len(kinds))]
        slow = [
            asyncio.create_task(slow_sender(server.address, setup, trickle, interval, started[k * per_kind + j]))
            for k, (_, setup, trickle, interval) in enumerate(kinds)
            for j in range(per_kind)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 60)
        # The slow ones are all held now; the normal ones run beside them.
        opening = asyncio.Semaphore(50)

        async def normal_one(tag: str, content: bytes) -> None:
            async with opening:
                await deliver_one(server.address, tag, content)

        await asyncio.gather(*(normal_one(tag, content) for tag, content in messages.items()))
        still_open = sum(not task.done() for task in slow)
        outcomes = await asyncio.gather(*slow)
        names = [name for name, *_ in kinds for _ in range(per_kind)]
        return list(zip(names, outcomes)), still_open

    with ServerProcess(
        backend, tmp_path / "server.log", timeouts=SLOW_TIMEOUTS, session_timeout=SLOW_SESSION_CAP,
        max_connections=400,
    ) as server:
        outcomes, still_open = run(scenario)
        stats = settle(server)
        # (A slow sender's message has no X-Load-Id: committing it would fail here.)
        counts = check_deliveries(server.deliveries(), messages)
        assert_clean_log(server)
    assert counts == collections.Counter(messages.keys()), "a normal sender's message was lost or delivered twice"
    for name, outcome in outcomes:
        assert outcome.ended_by_server, f"{name}: the server never closed it: {outcome}"
        last = outcome.transcript.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        assert last.startswith(b"421 4.4.2 "), f"{name}: {outcome.transcript!r}"
    assert stats["connects"] == stats["disconnects"] == normal + per_kind * len(kinds), stats
    figures(
        "slow", backend, slow_sessions=per_kind * len(kinds), normal_sessions=normal,
        normal_delivered=sum(counts.values()), slow_still_open_when_normal_done=still_open,
        slow_bytes_sent=sum(outcome.sent for _, outcome in outcomes),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_trickle_within_a_command_meets_the_command_deadline(backend: str, tmp_path: Path) -> None:
    # No session cap; 1 s per command (RFC 5321 §4.5.3.2.7).  Ten octets of
    # an EHLO line at 2.5 a second take 4 s: the command's deadline ends the
    # session after about three of them, although no single read waits 1 s
    # (the reads that continue a command keep its deadline: Receive's
    # ``continued``).  The blocking adapter is not run here (BACKENDS).
    with ServerProcess(backend, tmp_path / "server.log", timeouts={"command": 1.0, "data": 1.0}) as server:
        outcome = run(lambda: slow_sender(server.address, b"", b"EHLO slow.example\r\n"[:10], 0.4))
    assert outcome.ended_by_server and b"421 4.4.2 " in outcome.transcript, outcome


# -- 10,000 sessions cut at random points ------------------------------------------------

CUT_SESSIONS = 10_000
CUT_CONCURRENCY = 200


@dataclass
class CutPlan:
    """One session's script, where it is cut, and how."""

    script: bytes
    cut: int
    #: Each message's tag -> the offset just after its end (final dot or
    #: the last octet of its BDAT LAST chunk).
    ends: dict[str, int]
    contents: dict[str, bytes]
    kind: str
    reset: bool
    read_greeting: bool
    pieces: int

    @property
    def completed(self) -> list[str]:
        """The messages whose end was sent before the cut."""
        return [tag for tag, end in self.ends.items() if end <= self.cut]


def cut_plan(index: int, rng: random.Random) -> CutPlan:
    """A valid session (EHLO, one or two transactions by DATA or BDAT,
    QUIT) and a cut point: anywhere, or at one of the places where a
    message turns from partial into complete."""
    script = b"EHLO cut.example\r\n"
    ends: dict[str, int] = {}
    contents: dict[str, bytes] = {}
    marks: list[tuple[str, int]] = []  # (kind, offset) worth cutting at
    for number in range(rng.choice([1, 1, 1, 1, 1, 2])):
        tag = f"x{index}.{number}"
        content = make_message(tag, rng, rng.choice([150, 400, 1200, 6000]))
        contents[tag] = content
        script += b"MAIL FROM:<" + SENDER + b">\r\nRCPT TO:<" + tag.encode() + b"@server.example>\r\n"
        if rng.random() < 0.5:
            start = len(script) + len(b"DATA\r\n")
            script += b"DATA\r\n" + data_section(content)
            end = len(script)
            marks += [
                ("mid-DATA", rng.randint(start, end - 4)),
                ("before the final dot", end - 3),
                ("inside the final dot", end - rng.randint(1, 2)),
                ("right after the final dot", end),
            ]
        else:
            pieces = bdat_section(content, rng)
            start = len(script)
            script += b"".join(pieces[:-1])
            last_command = len(script)
            script += pieces[-1]
            end = len(script)
            header = pieces[-1].index(b"\r\n") + 2
            marks += [
                ("mid-BDAT", rng.randint(start, end - 1)),
                ("in the BDAT LAST command", last_command + rng.randint(1, header - 1)),
                ("one octet short of BDAT LAST", end - 1),
                ("right after BDAT LAST", end),
            ]
        ends[tag] = end
    script += b"QUIT\r\n"
    choice = rng.random()
    if choice < 0.05:
        kind, cut = "at connect", 0
    elif choice < 0.35:
        kind, cut = "anywhere", rng.randint(1, len(script))
    else:
        kind, cut = rng.choice(marks)
    return CutPlan(
        script=script, cut=cut, ends=ends, contents=contents, kind=kind,
        reset=rng.random() < 0.5, read_greeting=cut > 0 and rng.random() < 0.8, pieces=rng.randint(1, 3),
    )


async def cut_session(address: tuple[str, int], plan: CutPlan, rng: random.Random) -> None:
    """Connect, send the plan's prefix (in a few writes), and cut: a FIN,
    or a RST when the plan says so.  Replies after the greeting are never
    waited for: the cut may come before the server answered anything."""
    conn = await Conn.open(address)
    try:
        if plan.read_greeting:
            await conn.reply()
        prefix = plan.script[: plan.cut]
        bounds = sorted({0, len(prefix), *(rng.randint(0, len(prefix)) for _ in range(plan.pieces - 1))})
        for start, end in zip(bounds, bounds[1:]):
            await conn.write(prefix[start:end])
            await asyncio.sleep(0)
    except ConnectionError:
        pass  # the server closed first (a 421 refusal, say): nothing more to send
    finally:
        conn.abort(plan.reset)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_thousand_cut_sessions_store_nothing_partial(backend: str, tmp_path: Path) -> None:
    rng = random.Random(10_000)
    plans = [cut_plan(index, rng) for index in range(CUT_SESSIONS)]
    sent = {tag: content for plan in plans for tag, content in plan.contents.items()}
    completed = {tag for plan in plans for tag in plan.completed}

    async def scenario() -> None:
        gate = asyncio.Semaphore(CUT_CONCURRENCY)
        pacer = Pacer(server)

        async def one(index: int, plan: CutPlan) -> None:
            async with gate:
                await pacer.admit()
                await cut_session(server.address, plan, random.Random(index))

        try:
            await asyncio.gather(*(one(index, plan) for index, plan in enumerate(plans)))
        finally:
            await pacer.stop()

    # A streaming handler: it stages chunks and commits them in ``message``.
    with ServerProcess(
        backend, tmp_path / "server.log", max_connections=4 * CUT_CONCURRENCY, handler={"streaming": True},
    ) as server:
        run(scenario)
        stats = settle(server)
        counts = check_deliveries(server.deliveries(), sent)
        # Still healthy: a whole session delivers.
        healthy = {"h0": make_message("h0", rng, 3000)}
        run(lambda: deliver_one(server.address, "h0", healthy["h0"]))
        after = settle(server)
        assert check_deliveries(server.deliveries(), {**sent, **healthy})["h0"] == 1
        assert_clean_log(server)
    premature = set(counts) - completed
    assert not premature, f"committed before their end was sent: {sorted(premature)[:10]}"
    assert all(count == 1 for count in counts.values()), "a message was committed twice"
    assert counts, "nothing was committed at all: the checks above would prove nothing"
    assert stats["connects"] == stats["disconnects"], stats  # every session ended
    assert after["connects"] == stats["connects"] + 1
    kinds = collections.Counter(plan.kind for plan in plans)
    figures(
        "cut", backend, sessions_cut=len(plans), resets=sum(plan.reset for plan in plans),
        sessions_served=stats["connects"], messages_begun=len(sent), messages_fully_sent=len(completed),
        committed=len(counts), partial_staged_and_dropped=stats["discarded"], cut_points=dict(kinds),
    )


# -- endless lines ------------------------------------------------------------------------

FLOODERS = 100
FLOOD_BYTES = 2 * 1024 * 1024  # per connection (the long-lines ones: until closed)
LONG_LINE = b"NOOP " + b"y" * (100 * 1024) + b"\r\n"
FLOOD_CONFIG: dict[str, Any] = {"max_message_size": 65_536}
FLOOD_LIMITS = ServerConfig(**FLOOD_CONFIG)
MAX_ERRORS = FLOOD_LIMITS.max_errors  # the last mistake allowed is answered 421
# What one connection may make a server hold, from its configured limits:
# the adapter's read buffer (asyncio pauses reading at 256 KiB, plus one
# read of up to 256 KiB), one Receive (64 KiB) and its copy in the core,
# the core's unprocessed input and a message's content up to its size.
PER_CONNECTION = 512 * 1024 + 2 * 65_536 + FLOOD_LIMITS.max_receive_buffer + FLOOD_LIMITS.max_message_size
MEMORY_SLACK = 16 * 1024 * 1024


@dataclass
class FloodOutcome:
    """What one flooding connection sent and heard."""

    kind: str
    sent: int = 0
    transcript: bytes = b""
    closed: bool = False


async def flood(address: tuple[str, int], kind: str, ready: asyncio.Barrier) -> FloodOutcome:
    """Flood one connection (*kind*: an endless command line, long command
    lines with CRLF, or an endless line inside DATA), then end cleanly if
    the server still listens."""
    outcome = FloodOutcome(kind)
    conn = await Conn.open(address)
    closed = asyncio.Event()

    async def listen() -> None:
        while True:
            reply = await conn.reply(timeout=60)
            outcome.transcript += reply
            if not reply.endswith(b"\n"):
                closed.set()
                return

    listener = asyncio.create_task(listen())
    try:
        await conn.write(b"EHLO flood.example\r\n")
        if kind == "data":
            await conn.write(b"MAIL FROM:<" + SENDER + b">\r\nRCPT TO:<flood@server.example>\r\nDATA\r\n")
        await asyncio.wait_for(ready.wait(), 60)
        block = b"x" * 65_536
        budget = 2 * MAX_ERRORS * len(LONG_LINE) if kind == "long lines" else FLOOD_BYTES
        while outcome.sent < budget and not closed.is_set():
            chunk = LONG_LINE if kind == "long lines" else block
            try:
                await conn.write(chunk)
            except ConnectionError:
                break
            outcome.sent += len(chunk)
        with_end = {"endless line": b"\r\nQUIT\r\n", "data": b"\r\n.\r\nQUIT\r\n", "long lines": b"QUIT\r\n"}
        if not closed.is_set():
            try:
                await conn.write(with_end[kind])
            except ConnectionError:
                pass
        await asyncio.wait_for(asyncio.shield(listener), 60)
        outcome.closed = closed.is_set()
        return outcome
    finally:
        listener.cancel()
        await conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_endless_lines_keep_memory_bounded(backend: str, tmp_path: Path) -> None:
    rng = random.Random(100)
    kinds = ["endless line", "long lines", "data"]
    plan = [kinds[index % 3] for index in range(FLOODERS)]
    warm = {"w0": make_message("w0", rng, 3000), "w1": make_message("w1", rng, 3000)}

    async def scenario() -> list[FloodOutcome]:
        ready = asyncio.Barrier(FLOODERS)
        return list(await asyncio.gather(*(flood(server.address, kind, ready) for kind in plan)))

    with ServerProcess(
        backend, tmp_path / "server.log", config=FLOOD_CONFIG, max_connections=FLOODERS + 20, trace_memory=True,
    ) as server:
        run(lambda: deliver_one(server.address, "w0", warm["w0"]))  # code paths warmed up
        before = settle(server)
        server.request("reset_peak")
        outcomes = run(scenario)
        during = settle(server)
        run(lambda: deliver_one(server.address, "w1", warm["w1"]))  # still serves
        assert check_deliveries(server.deliveries(), warm) == collections.Counter(warm.keys())
        assert_clean_log(server)
    bound = FLOODERS * PER_CONNECTION + MEMORY_SLACK
    growth = during["traced_peak"] - before["traced"]
    sent = sum(outcome.sent for outcome in outcomes)
    for outcome in outcomes:
        replies = outcome.transcript
        assert replies.startswith(b"220 "), outcome.transcript[:200]
        if outcome.kind == "endless line":
            # 500 once for the whole line, then the next line is a command again.
            assert replies.count(b"500 5.5.2 ") == 1 and replies.endswith(b"221 2.0.0 Bye\r\n"), replies[-300:]
        elif outcome.kind == "long lines":
            # 500 for each, and the last mistake allowed closes the session.
            assert b"500 5.5.2 " in replies and outcome.closed, replies[-300:]
            last = replies.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
            # The server answers the last mistake allowed with 421 and
            # closes.  The flooder is still writing then, so the close meets
            # unread input and the kernel resets the connection, which can
            # discard the 421 before the flooder reads it (a lingering close
            # would keep it; see the issue notes).  Either way the session
            # ended at the error limit and nothing else was answered.
            assert last.startswith(b"421 4.7.0 ") or last.startswith(b"500 5.5.2 "), replies[-300:]
            assert replies.count(b"500 5.5.2 ") <= MAX_ERRORS, replies[-300:]
        else:
            assert b"354 " in replies and b"552 5.3.4 " in replies and replies.endswith(b"221 2.0.0 Bye\r\n"), (
                replies[-300:]
            )
    assert sent > bound, "the flood must outweigh the bound, or the test could not fail"
    assert growth < bound, f"traced memory grew by {growth} octets (bound {bound}) after {sent} octets of flood"
    rss_growth = during["rss_peak"] - before["rss"]
    assert rss_growth < bound, f"the resident set grew by {rss_growth} octets (bound {bound})"
    assert during["connects"] == during["disconnects"], during
    figures(
        "endless", backend, connections=FLOODERS, bytes_sent=sent, bound=bound,
        traced_before=before["traced"], traced_peak_during=during["traced_peak"], traced_after=during["traced"],
        rss_before=before["rss"], rss_after=during["rss"], rss_peak=during["rss_peak"],
    )


# -- shutdown in the middle of a load -----------------------------------------------------


@dataclass
class Ledger:
    """What the clients know about each message."""

    sent: dict[str, bytes] = field(default_factory=dict)
    #: The end of data (final dot, or the last BDAT chunk) was handed to
    #: the socket: only these may have been committed.
    end_written: set[str] = field(default_factory=set)
    #: Answered 250 after its end of data: these must have been committed.
    accepted: set[str] = field(default_factory=set)
    refused_after_shutdown: int = 0


async def looping_sender(conn: Conn, name: str, ledger: Ledger, rng: random.Random, stuck: bool) -> None:
    """Deliver messages one after another on a greeted connection (DATA
    or BDAT, the content in a few writes) until the server ends the
    session."""
    try:
        await conn.write(b"EHLO loop.example\r\n")
        if not (await conn.reply()).startswith(b"250"):
            return
        for number in range(10_000):
            tag = f"{name}.{number}"
            content = make_message(tag, rng, rng.randint(200, 6000), stuck=stuck and number == 0)
            ledger.sent[tag] = content
            envelope = b"MAIL FROM:<" + SENDER + b">\r\nRCPT TO:<" + tag.encode() + b"@server.example>\r\n"
            if rng.random() < 0.5:
                await conn.write(envelope + b"DATA\r\n")
                replies = [await conn.reply() for _ in range(3)]
                if [reply[:4] for reply in replies] != [b"250 ", b"250 ", b"354 "]:
                    return
                section = data_section(content)
                split = sorted(rng.sample(range(1, len(section) - 3), 2))
                pieces = [section[: split[0]], section[split[0] : split[1]], section[split[1] :]]
                due = 1
            else:
                chunks = bdat_section(content, rng)
                whole = envelope + b"".join(chunks)
                pieces = [whole[: len(whole) // 2], whole[len(whole) // 2 :]]
                due = 2 + len(chunks)  # MAIL, RCPT and each chunk are answered
            for index, piece in enumerate(pieces):
                if index == len(pieces) - 1:
                    ledger.end_written.add(tag)
                await conn.write(piece)
                await asyncio.sleep(rng.uniform(0, 0.005))
            replies = [await conn.reply(timeout=60) for _ in range(due)]
            if not all(reply.startswith(b"250 ") for reply in replies):
                return
            ledger.accepted.add(tag)
    except ConnectionError:
        return
    finally:
        await conn.close()


async def idle_sender(conn: Conn) -> bytes:
    """A greeted session that says EHLO and half a command, then waits:
    the shutdown must answer it 421 at once."""
    try:
        await conn.write(b"EHLO idle.example\r\nMAIL FROM:<")
        return await conn.rest(timeout=90)
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_shutdown_under_load_loses_no_accepted_message(backend: str, tmp_path: Path) -> None:
    senders, idlers, stuck, cutters = 150, 20, 3, 400
    ledger = Ledger()
    rng = random.Random(42)
    cut_plans = [cut_plan(1_000_000 + index, rng) for index in range(cutters)]
    for plan in cut_plans:
        ledger.sent.update(plan.contents)
        ledger.end_written.update(plan.completed)

    async def scenario() -> tuple[list[bytes], int]:
        opening = asyncio.Semaphore(64)
        conns = [conn for conn, _ in await asyncio.gather(
            *(greeted(server.address, opening) for _ in range(senders + idlers))
        )]
        tasks = [
            asyncio.create_task(looping_sender(conns[k], f"s{k}", ledger, random.Random(k), k < stuck))
            for k in range(senders)
        ]
        idle = [asyncio.create_task(idle_sender(conn)) for conn in conns[senders:]]
        gate = asyncio.Semaphore(50)
        pacer = Pacer(server)

        async def cut_one(index: int, plan: CutPlan) -> None:
            async with gate:
                await pacer.admit()
                try:
                    await cut_session(server.address, plan, random.Random(index))
                except ConnectionError:
                    ledger.refused_after_shutdown += 1

        cuts = asyncio.gather(*(cut_one(index, plan) for index, plan in enumerate(cut_plans)))
        while len(ledger.accepted) < 400:  # in the middle of it all
            await asyncio.sleep(0.01)
            assert not all(task.done() for task in tasks), "the senders ended before the shutdown"
        accepted_before = len(ledger.accepted)
        await asyncio.to_thread(server.request, "shutdown", timeout=3.0)
        pacer.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await asyncio.wait_for(cuts, 60)
        idle_heard = await asyncio.wait_for(asyncio.gather(*idle), 60)
        try:
            late = await Conn.open(server.address)
        except ConnectionError:
            refused = True
        else:
            refused = (await late.reply()).startswith(b"421 ")
            await late.close()
        assert refused, "a connection was served after the shutdown"
        await pacer.stop()
        return idle_heard, accepted_before

    with ServerProcess(
        backend, tmp_path / "server.log", max_connections=600, handler={"delay": 0.02},
    ) as server:
        idle_heard, accepted_before = run(scenario)
        stats = server.stats()
        counts = check_deliveries(server.deliveries(), ledger.sent)
        assert_clean_log(server)
    lost = ledger.accepted - set(counts)
    assert not lost, f"answered 250 but not committed: {sorted(lost)[:10]}"
    premature = set(counts) - ledger.end_written
    assert not premature, f"committed before their end was written: {sorted(premature)[:10]}"
    assert all(count == 1 for count in counts.values()), "a message was committed twice"
    stuck_tags = {f"s{k}.0" for k in range(stuck)}
    assert not stuck_tags & set(counts), "a message whose hook was cancelled counts as delivered"
    assert stats["cancelled"] == stuck, stats  # the grace time ran out for those
    assert stats["connects"] == stats["disconnects"], f"a session ended without its disconnect hook: {stats}"
    for heard in idle_heard:
        assert heard.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].startswith(b"421 4.3.2 "), heard
    looped = {tag for tag in ledger.sent if tag.startswith("s")}
    figures(
        "shutdown", backend, sessions=stats["connects"], answered_250_before_shutdown=accepted_before,
        answered_250=len(ledger.accepted), committed_of_those=len(ledger.accepted & set(counts)),
        committed_without_a_250_seen=len((set(counts) & looped) - ledger.accepted),
        end_written_not_committed=len((ledger.end_written & looped) - set(counts)),
        cut_sessions_committed=len(set(counts) - looped), lost=len(lost), force_cancelled=stats["cancelled"],
        refused_after_shutdown=ledger.refused_after_shutdown,
    )


# -- a session cancelled after the grace time still gets its disconnect hook ------------


class Stuck(Handler):
    """Records hook calls.  ``message`` never returns by itself; nor does
    ``disconnect`` when *stuck_hook* says so, and with ``"failing"`` the
    disconnect hook raises."""

    def __init__(self, forever: Callable[[], Awaitable[object]], stuck_hook: str) -> None:
        self.forever = forever
        self.stuck_hook = stuck_hook
        self.calls: list[tuple[str, str | None]] = []

    async def message(self, session: Session, envelope: Envelope) -> None:
        self.calls.append(("message", session.ehlo_name))
        if self.stuck_hook != "disconnect":
            await self.forever()

    async def disconnect(self, session: Session) -> None:
        self.calls.append(("disconnect", session.ehlo_name))
        if self.stuck_hook == "disconnect":
            await self.forever()
        if self.stuck_hook == "failing":
            raise RuntimeError("cleanup failed")


SESSION = (
    b"EHLO cancel.example\r\nMAIL FROM:<" + SENDER + b">\r\nRCPT TO:<a@server.example>\r\n"
    b"BDAT 12 LAST\r\nSubject: x\r\nQUIT\r\n"
)
STUCK_HOOKS = ["message", "disconnect", "failing"]


def check_cancelled(handler: Stuck, heard: bytes, log: str) -> None:
    """The disconnect hook ran once, last, with the session as it was (and
    not a second time when the cancel hit it); the message was answered,
    and the session ended, only if its hook returned; a failing
    disconnect hook was logged."""
    assert handler.calls == [("message", "cancel.example"), ("disconnect", "cancel.example")]
    answered = handler.stuck_hook == "disconnect"
    assert (b"250 2.0.0 " in heard) == heard.endswith(b"221 2.0.0 Bye\r\n") == answered, heard
    assert ("the disconnect hook failed" in log) == (handler.stuck_hook == "failing"), log


@pytest.mark.parametrize("stuck_hook", STUCK_HOOKS)
def test_asyncio_forced_cancel_still_calls_disconnect(stuck_hook: str, caplog: pytest.LogCaptureFixture) -> None:
    handler = Stuck(lambda: asyncio.Event().wait(), stuck_hook)

    async def main() -> bytes:
        server = AsyncSMTPServer(handler)
        await server.start()
        conn = await Conn.open(server.address)
        await conn.write(SESSION)
        while len(handler.calls) < (2 if stuck_hook == "disconnect" else 1):
            await asyncio.sleep(0.01)
        await server.shutdown(timeout=0.2)  # the stuck hook is cancelled
        heard = await conn.rest()
        await conn.close()
        return heard

    check_cancelled(handler, run(main, 30), caplog.text)


@pytest.mark.parametrize("stuck_hook", STUCK_HOOKS)
def test_trio_forced_cancel_still_calls_disconnect(stuck_hook: str, caplog: pytest.LogCaptureFixture) -> None:
    handler = Stuck(trio.sleep_forever, stuck_hook)
    heard = b""

    async def main() -> None:
        nonlocal heard
        server = TrioSMTPServer(handler)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                stream = await trio.open_tcp_stream(*server.address)
                await stream.send_all(SESSION)
                while len(handler.calls) < (2 if stuck_hook == "disconnect" else 1):
                    await trio.sleep(0.01)
                server.shutdown(timeout=0.2)  # serve() returns once the stuck hook is cancelled
            while chunk := await stream.receive_some(65_536):
                heard += chunk
            await stream.aclose()

    trio.run(main)
    check_cancelled(handler, heard, caplog.text)


# -- a TLS handshake cut short frees everything ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_handshake_cut_short_frees_the_session(backend: str, tmp_path: Path) -> None:
    # Every place is taken by a session whose client starts the STARTTLS
    # handshake (RFC 3207 §4) and resets the connection: a session pinned
    # by it would keep its place for ever, and the server would answer
    # everybody 421.
    places = 40

    async def scenario() -> None:
        opening = asyncio.Semaphore(32)

        async def one() -> None:
            conn, _ = await greeted(server.address, opening)
            try:
                await conn.write(b"EHLO cut.example\r\n")
                expect(await conn.reply(), b"250", "EHLO")
                await conn.write(b"STARTTLS\r\n")
                expect(await conn.reply(), b"220 ", "STARTTLS")
                await conn.write(b"\x16\x03\x01\x00")  # the start of a ClientHello
            finally:
                conn.abort(reset=True)

        await asyncio.gather(*(one() for _ in range(places)))

    async def served() -> None:
        # A place frees once the session's last step ran; until then the
        # server answers 421 and closes, and the client tries again.
        for _ in range(100):
            conn = await Conn.open(server.address)
            greeting = await conn.reply()
            await conn.close()
            if greeting.startswith(b"220 "):
                break
            expect(greeting, b"421 4.3.2 ", "a refusal")
            await asyncio.sleep(0.1)
        await deliver_one(server.address, "t0", healthy["t0"])

    healthy = {"t0": make_message("t0", random.Random(3), 500)}
    with ServerProcess(backend, tmp_path / "server.log", max_connections=places, starttls=True) as server:
        run(scenario)
        stats = settle(server)
        run(served)
        counts = check_deliveries(server.deliveries(), healthy)
        assert_clean_log(server)
    assert stats["connects"] == stats["disconnects"] == places, stats
    assert counts == collections.Counter(healthy.keys())


@pytest.mark.parametrize("answer", ["hangup", "reset"])
def test_asyncio_client_tls_handshake_cut_short_fails_at_once(answer: str) -> None:
    # A server that accepts STARTTLS, reads the start of the ClientHello and
    # hangs up or resets: connect() fails (it used to wait for ever for the
    # end of a connection whose loss the failed TLS layer never reported).
    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted.example ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-scripted.example\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 2.0.0 Ready to start TLS\r\n")
        await reader.readexactly(1)
        if answer == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    async def main() -> BaseException:
        listener = await asyncio.start_server(scripted, "127.0.0.1", 0)
        host, port = listener.sockets[0].getsockname()[:2]
        tls = ClientOptions(helo_name="client.example", server_hostname="localhost", tls=TLSMode.OPPORTUNISTIC)
        client = AsyncSMTPClient(host, port, options=tls, ssl_context=certs.client_context())
        try:
            await client.connect()
        except errors.SMTPError as exc:
            return exc
        finally:
            listener.close()
            await listener.wait_closed()
        raise AssertionError("connected through a handshake that never happened")

    failure = run(main, 30)
    assert isinstance(failure, (errors.ProtocolFailure, errors.Disconnected)), failure
