"""The whole benchmark: the core, our servers and clients beside the peers.

    python3 bench/run.py             # full run (several minutes on 2 cores)
    python3 bench/run.py --quick     # a smoke run (small counts, one repeat)
    python3 bench/run.py --only server,client

One table, every figure measured in this run on this machine, each the
median of ``--repeats`` runs with the min-max spread:

* **core**: ``bench/core.py`` (client core driving a server core in memory);
* **server**: Postfix's ``smtp-source`` (10 sessions, 10 KB messages, with
  and without connection reuse) against our asyncio, trio and blocking
  servers (``python -m smtpproto serve --discard``), the asyncio one with
  ``--workers 2`` and with uvloop when it is installed, against aiosmtpd
  (a handler that answers 250) and against Postfix's ``smtp-sink`` (C);
  messages/s, and CPU seconds per 1,000 messages of the server's
  processes (read from ``/proc``, during the load only); every server
  runs for the whole part and the load goes to each in turn, round after
  round, so that a drift of the machine's speed moves every figure alike;
* **client**: 2,000 messages of 10 KB over one connection to ``smtp-sink``
  (messages/s, and the client's CPU microseconds per message)
  from our blocking and asyncio clients (one ``send_message`` call per
  message, and the whole batch in one ``send_messages`` call, which
  pipelines each message's envelope behind the previous one's content),
  smtplib, aiosmtplib and ``smtp-source -d -s 1`` (C), with 1 and with 10
  recipients per message;
* **memory**: the server's resident memory per idle session, with 1,000
  sessions open that have said EHLO, ours against aiosmtpd.

The last column holds the issue's targets as ratios.  The peers come from
``tests/peers/install-debian.sh`` (smtp-sink, smtp-source) and the test
extra (aiosmtpd, aiosmtplib); a missing peer's rows say so instead of
failing.  Run it on a quiet machine: the figures are wall-clock rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import os
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import core

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SENDER = "bench@client.example"
RCPT = "sink@test.example"


@dataclass
class Figure:
    """One row of the table."""

    group: str
    name: str
    samples: list[float]
    unit: str
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def fmt(value: float) -> str:
    """A figure with sensible precision."""
    if value != value:  # NaN
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def print_table(figures: Sequence[Figure]) -> None:
    """The one table: group, name, median, min-max, unit, note."""
    name_width = max(len(f.name) for f in figures)
    print(f"{'':8}  {'benchmark':{name_width}}  {'median':>10}  {'min-max':>19}  {'unit':<14}  note")
    group = None
    for figure in figures:
        if figure.group != group:
            group = figure.group
            print(f"{group}")
        spread = (
            f"{fmt(min(figure.samples))}-{fmt(max(figure.samples))}" if figure.samples else "-"
        )
        print(
            f"{'':8}  {figure.name:{name_width}}  {fmt(figure.median):>10}  {spread:>19}  "
            f"{figure.unit:<14}  {figure.note}"
        )


# -- processes --------------------------------------------------------------


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something answers on *port* with a greeting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as sock:
            sock.settimeout(2)
            if sock.recv(100).startswith(b"220"):
                sock.sendall(b"QUIT\r\n")
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of *pid* and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for candidate, used in cpu.items():
        walk = candidate
        while walk > 1:
            if walk == pid:
                total += used
                break
            walk = parents.get(walk, 0)
    return total


def tree_rss(pid: int) -> int:
    """Resident set size in bytes of *pid* (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def server(command: Sequence[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server command until the block ends; yields its pid."""
    process = subprocess.Popen(
        list(command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})}, start_new_session=True,
    )
    try:
        wait_for_port(port, process)
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(20)
        if process.stderr is not None:
            process.stderr.close()


def ours(backend: str, port: int, *extra: str) -> list[str]:
    """Our server as the CLI runs it, dropping every message."""
    return [
        PYTHON, "-m", "smtpproto", "serve", "--backend", backend, "--discard",
        "--port", str(port), "--max-connections", "4000", "--hostname", "bench.example", *extra,
    ]


def aiosmtpd_cmd(port: int) -> list[str]:
    """aiosmtpd with a handler that answers 250 to every message."""
    return [PYTHON, str(HERE / "aiosmtpd_sink.py"), str(port)]


def smtp_sink_cmd(port: int) -> list[str]:
    """Postfix's smtp-sink (C), the reference."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return ["smtp-sink", *user, f"127.0.0.1:{port}", "1024"]


# -- server benchmark -------------------------------------------------------


def smtp_source(port: int, messages: int, sessions: int, reuse: bool, recipients: int = 1) -> float:
    """Run smtp-source; returns its wall time in seconds."""
    command = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "10240",
               "-f", SENDER, "-t", RCPT]
    if recipients > 1:
        command += ["-r", str(recipients)]
    if reuse:
        command.append("-d")
    command.append(f"127.0.0.1:{port}")
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
    return time.perf_counter() - started


def server_rows(messages: int, repeats: int) -> list[Figure]:
    """messages/s and CPU s per 1,000 messages for each server."""
    subjects: list[tuple[str, Callable[[int], list[str]], dict[str, str]]] = [
        ("smtpproto asyncio", lambda p: ours("asyncio", p), {}),
        ("smtpproto trio", lambda p: ours("trio", p), {}),
        ("smtpproto blocking", lambda p: ours("sync", p), {}),
        ("smtpproto asyncio --workers 2", lambda p: ours("asyncio", p, "--workers", "2"), {}),
    ]
    if importlib.util.find_spec("uvloop") is not None:
        subjects.append(("smtpproto uvloop", lambda p: ours("uvloop", p), {}))
    if importlib.util.find_spec("aiosmtpd") is not None:
        subjects.append(("aiosmtpd", aiosmtpd_cmd, {}))
    subjects.append(("smtp-sink (C)", smtp_sink_cmd, {}))
    figures: list[Figure] = []
    rates: dict[tuple[str, bool], float] = {}
    for reuse in (True, False):
        label = "reused" if reuse else "new conn/msg"
        rate_samples: dict[str, list[float]] = {name: [] for name, _, _ in subjects}
        cpu_samples: dict[str, list[float]] = {name: [] for name, _, _ in subjects}
        with contextlib.ExitStack() as running:
            # Every server runs (idle when not under load) for the whole
            # block, and the load goes round after round of every server,
            # as in client_rows: the machine's speed drifts over minutes,
            # and a ratio should not depend on who ran when.
            where: dict[str, tuple[int, int]] = {}
            for name, command, env in subjects:
                port = free_port()
                where[name] = (port, running.enter_context(server(command(port), port, env)))
            for _ in range(repeats):
                for name, (port, pid) in where.items():
                    before = tree_cpu(pid)
                    wall = smtp_source(port, messages, 10, reuse)
                    cpu_samples[name].append((tree_cpu(pid) - before) / messages * 1000)
                    rate_samples[name].append(messages / wall)
        for name, _, _ in subjects:
            rates[(name, reuse)] = statistics.median(rate_samples[name])
            figures.append(Figure(f"server, 10 sessions, {label}", f"{name}", rate_samples[name], "msg/s"))
            figures.append(
                Figure(f"server, 10 sessions, {label}", f"{name} CPU", cpu_samples[name], "CPU s/1000 msg")
            )
        for figure in figures:
            if figure.unit != "msg/s" or not figure.group.endswith(label):
                continue
            subject = figure.name
            if subject.startswith("smtpproto"):
                notes = []
                if ("aiosmtpd", reuse) in rates:
                    notes.append(f"{figure.median / rates[('aiosmtpd', reuse)]:.1f}x aiosmtpd (target >= 4x)")
                notes.append(f"{figure.median / rates[('smtp-sink (C)', reuse)]:.0%} of smtp-sink (target >= 40%)")
                figure.note = "; ".join(notes)
    return figures


# -- client benchmark -------------------------------------------------------


_BODY = b"".join(b"line %05d " % n + b"x" * 64 + b"\r\n" for n in range(130))


def message(index: int) -> bytes:
    """A 10 KB message (the body is built once, outside the timed loops)."""
    return (
        b"From: <%s>\r\nTo: <%s>\r\nSubject: bench %d\r\nMessage-ID: <%d@client.example>\r\n\r\n"
        % (SENDER.encode(), RCPT.encode(), index, index)
    ) + _BODY


def client_ours_sync(port: int, count: int, rcpts: list[str]) -> float:
    from smtpproto.flows import ClientOptions, TLSMode
    from smtpproto.sync import SMTPClient

    client = SMTPClient("127.0.0.1", port, options=ClientOptions(helo_name="client.example", tls=TLSMode.NEVER))
    started = time.perf_counter()
    client.connect()
    for index in range(count):
        client.send_message(message(index), SENDER, rcpts)
    client.quit()
    return time.perf_counter() - started


def client_ours_asyncio(port: int, count: int, rcpts: list[str]) -> float:
    from smtpproto.asyncio import AsyncSMTPClient
    from smtpproto.flows import ClientOptions, TLSMode

    async def main() -> float:
        client = AsyncSMTPClient("127.0.0.1", port, options=ClientOptions(helo_name="client.example", tls=TLSMode.NEVER))
        started = time.perf_counter()
        await client.connect()
        for index in range(count):
            await client.send_message(message(index), SENDER, rcpts)
        await client.quit()
        return time.perf_counter() - started

    return asyncio.run(main())


def client_ours_sync_batch(port: int, count: int, rcpts: list[str]) -> float:
    from smtpproto.flows import ClientOptions, TLSMode, prepare
    from smtpproto.sync import SMTPClient

    client = SMTPClient("127.0.0.1", port, options=ClientOptions(helo_name="client.example", tls=TLSMode.NEVER))
    started = time.perf_counter()
    client.connect()
    outcomes = client.send_messages(prepare(message(index), SENDER, rcpts) for index in range(count))
    client.quit()
    elapsed = time.perf_counter() - started
    _check_outcomes(outcomes, count)
    return elapsed


def client_ours_asyncio_batch(port: int, count: int, rcpts: list[str]) -> float:
    from smtpproto.asyncio import AsyncSMTPClient
    from smtpproto.flows import ClientOptions, TLSMode, prepare

    async def main() -> float:
        client = AsyncSMTPClient("127.0.0.1", port, options=ClientOptions(helo_name="client.example", tls=TLSMode.NEVER))
        started = time.perf_counter()
        await client.connect()
        outcomes = await client.send_messages(prepare(message(index), SENDER, rcpts) for index in range(count))
        await client.quit()
        elapsed = time.perf_counter() - started
        _check_outcomes(outcomes, count)
        return elapsed

    return asyncio.run(main())


def _check_outcomes(outcomes: Sequence[object], count: int) -> None:
    """A batch must have delivered every message (a refusal is a bug here)."""
    failed = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    if len(outcomes) != count or failed:
        raise RuntimeError(f"batch send: {len(outcomes)} outcomes for {count} messages, failures {failed[:3]}")


def client_smtplib(port: int, count: int, rcpts: list[str]) -> float:
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as client:
        for index in range(count):
            client.sendmail(SENDER, rcpts, message(index))
    return time.perf_counter() - started


def client_aiosmtplib(port: int, count: int, rcpts: list[str]) -> float:
    import aiosmtplib

    async def main() -> float:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="client.example")
        started = time.perf_counter()
        await client.connect()
        for index in range(count):
            await client.sendmail(SENDER, rcpts, message(index))
        await client.quit()
        return time.perf_counter() - started

    return asyncio.run(main())


def client_smtp_source(port: int, count: int, rcpts: list[str]) -> float:
    return smtp_source(port, count, 1, True, recipients=len(rcpts))


def _cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and its
    reaped children: an in-process client, or smtp-source once it exited."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def client_rows(count: int, repeats: int) -> list[Figure]:
    """messages/s for each client, one connection to smtp-sink."""
    subjects: list[tuple[str, Callable[[int, int, list[str]], float]]] = [
        ("smtpproto blocking", client_ours_sync),
        ("smtpproto blocking, send_messages", client_ours_sync_batch),
        ("smtpproto asyncio", client_ours_asyncio),
        ("smtpproto asyncio, send_messages", client_ours_asyncio_batch),
        ("smtplib", client_smtplib),
    ]
    if importlib.util.find_spec("aiosmtplib") is not None:
        subjects.append(("aiosmtplib", client_aiosmtplib))
    subjects.append(("smtp-source -d -s 1 (C)", client_smtp_source))
    figures: list[Figure] = []
    for recipients in (1, 10):
        rcpts = [RCPT] if recipients == 1 else [f"sink{n}@test.example" for n in range(recipients)]
        group = f"client, 1 connection, {recipients} rcpt"
        rates: dict[str, float] = {}
        rows: list[Figure] = []
        port = free_port()
        samples: dict[str, list[float]] = {name: [] for name, _ in subjects}
        cpu: dict[str, list[float]] = {name: [] for name, _ in subjects}
        with server(smtp_sink_cmd(port), port):
            # Round after round of every client, not every run of one client
            # then the next: on a shared machine the load drifts, and the
            # ratios in the notes should not depend on who ran when.
            for _ in range(repeats):
                for name, run in subjects:
                    before = _cpu_seconds()
                    samples[name].append(count / run(port, count, rcpts))
                    cpu[name].append((_cpu_seconds() - before) / count * 1e6)
        for name, _ in subjects:
            rates[name] = statistics.median(samples[name])
            rows.append(Figure(group, name, samples[name], "msg/s"))
            rows.append(Figure(group, f"{name} CPU", cpu[name], "CPU us/msg"))
        for figure in rows:
            if figure.unit != "msg/s":
                continue
            if figure.name.startswith("smtpproto blocking"):
                figure.note = (
                    f"{figure.median / rates['smtplib']:.1f}x smtplib (target >= 2x); "
                    f"{figure.median / rates['smtp-source -d -s 1 (C)']:.0%} of smtp-source"
                )
            elif figure.name.startswith("smtpproto asyncio") and "aiosmtplib" in rates:
                figure.note = f"{figure.median / rates['aiosmtplib']:.1f}x aiosmtplib (target >= 4x)"
        figures += rows
    return figures


# -- memory -----------------------------------------------------------------


def idle_sessions(port: int, pid: int, sessions: int) -> float:
    """Bytes of server RSS per idle session (after EHLO)."""
    baseline = tree_rss(pid)
    socks: list[socket.socket] = []
    try:
        for _ in range(sessions):
            sock = socket.create_connection(("127.0.0.1", port), 10)
            socks.append(sock)
        for sock in socks:
            sock.settimeout(30)
            if not sock.recv(512).startswith(b"220"):
                raise RuntimeError("no greeting")
            sock.sendall(b"EHLO client.example\r\n")
        for sock in socks:
            reply = b""
            while not reply.endswith(b"\r\n") or b"\r\n250 " not in b"\r\n" + reply:
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("closed during EHLO")
                reply += chunk
        time.sleep(0.5)
        return (tree_rss(pid) - baseline) / sessions
    finally:
        for sock in socks:
            sock.close()


def memory_rows(sessions: int, repeats: int) -> list[Figure]:
    """RSS per idle session for our servers and aiosmtpd."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < sessions + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, sessions * 4), hard))
    subjects: list[tuple[str, Callable[[int], list[str]]]] = [
        ("smtpproto asyncio", lambda p: ours("asyncio", p)),
        ("smtpproto trio", lambda p: ours("trio", p)),
    ]
    if importlib.util.find_spec("uvloop") is not None:
        subjects.append(("smtpproto uvloop", lambda p: ours("uvloop", p)))
    if importlib.util.find_spec("aiosmtpd") is not None:
        subjects.append(("aiosmtpd", aiosmtpd_cmd))
    figures: list[Figure] = []
    per_session: dict[str, float] = {}
    for name, command in subjects:
        samples = []
        for _ in range(repeats):
            port = free_port()
            with server(command(port), port) as pid:
                samples.append(idle_sessions(port, pid, sessions) / 1024)
        per_session[name] = statistics.median(samples)
        figures.append(Figure(f"memory, {sessions} idle sessions", name, samples, "KiB/session"))
    if "aiosmtpd" in per_session:
        for figure in figures:
            if figure.name.startswith("smtpproto"):
                figure.note = f"{figure.median / per_session['aiosmtpd']:.0%} of aiosmtpd (target <= 25%)"
    return figures


# -- core -------------------------------------------------------------------


def core_rows(quick: bool, repeats: int) -> list[Figure]:
    """The in-memory core figures, from bench/core.py."""
    count = 20 if quick else 200
    size = 1_000_000 if quick else 10_000_000
    cases: list[tuple[str, Callable[[], float], str]] = []
    for kb, per_message in ((1, 1), (1, 10), (100, 1), (100, 10)):
        body = core.make_body(kb * 1000)
        cases.append((f"transactions, {kb} KB, {per_message} rcpt",
                      functools.partial(core.transactions, body, per_message, count), "tx/s"))
    for share, label in ((0.0, "clean"), (0.01, "1% dot lines")):
        body = core.make_body(size, dot_share=share)
        mb = size // 1_000_000
        cases.append((f"DATA stuffing, {mb} MB, {label}", functools.partial(core.stuffing, body), "MB/s"))
        cases.append((f"DATA unstuffing, {mb} MB, {label}", functools.partial(core.unstuffing, body), "MB/s"))
    figures = []
    for name, run, unit in cases:
        samples = [run() for _ in range(repeats)]
        note = ""
        if unit == "MB/s" and "clean" in name:
            note = f"{statistics.median(samples) / 1000:.0%} of 1 GB/s (target >= 100%)"
        figures.append(Figure("core (no sockets)", name, samples, unit, note))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--only", default="core,server,client,memory", help="comma-separated parts to run")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    repeats = 1 if args.quick else args.repeats
    missing = [tool for tool in ("smtp-sink", "smtp-source") if shutil.which(tool) is None]
    figures: list[Figure] = []
    if "core" in parts:
        figures += core_rows(args.quick, repeats)
    if missing and parts & {"server", "client"}:
        print(f"skipping the server and client parts: {', '.join(missing)} not found "
              "(tests/peers/install-debian.sh installs them)")
        parts -= {"server", "client"}
    if "server" in parts:
        figures += server_rows(200 if args.quick else 5000, repeats)
    if "client" in parts:
        figures += client_rows(100 if args.quick else 2000, repeats)
    if "memory" in parts:
        figures += memory_rows(100 if args.quick else 1000, repeats)
    print_table(figures)


if __name__ == "__main__":
    main()
