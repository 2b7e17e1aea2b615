"""Core-only benchmark: a client core driving a server core in memory.

    python3 bench/core.py            # full run (under a minute on 2 cores)
    python3 bench/core.py --quick    # a smoke run for CI (seconds)

It prints one table: transactions per second for 1 KB and 100 KB messages
with 1 and 10 recipients, and DATA throughput in MB/s for a 10 MB message
fed in 64 KiB chunks, stuffing (client) and unstuffing (server) measured
separately, for clean content (no line starts with a dot) and with 1% of
the lines starting with a dot.  Each figure is the median of several runs,
with the min-max spread.  No sockets: this measures the protocol core
alone; ``bench/run.py`` sets it beside our servers, clients and the peers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from smtpproto import (
    NEED_DATA,
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    ServerConfig,
    ServerConnection,
)


def make_body(size: int, dot_share: float = 0.01, line: int = 76) -> bytes:
    """A message of about *size* octets; *dot_share* of its lines start with a dot."""
    lines = []
    every = max(1, round(1 / dot_share)) if dot_share else 0
    count = size // (line + 2)
    for index in range(count):
        text = (b"." if every and index % every == 0 else b"x") + b"y" * (line - 1)
        lines.append(text)
    return b"Subject: bench\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"


def _serve(server: ServerConnection) -> bytes:
    out = bytearray()
    while True:
        event = server.next_event()
        if event is NEED_DATA:
            return bytes(out)
        if isinstance(event, MessageData):
            continue
        if server.awaiting_reply is None and not isinstance(event, Reply):
            return bytes(out)
        out += server.send(server.default_reply())


def _drain(client: ClientConnection, data: bytes) -> None:
    client.receive_data(data)
    while isinstance(client.next_event(), Reply):
        pass


def transactions(body: bytes, recipients: int, count: int) -> float:
    """Transactions per second over one session, pipelined."""
    config = ServerConfig(max_message_size=max(len(body) * 2, 65536))
    server = ServerConnection(config)
    client = ClientConnection()
    _drain(client, server.send(server.greeting()))
    server.receive_data(client.send(Ehlo(domain="client.example")))
    _drain(client, _serve(server))
    rcpts = [Rcpt(forward_path=f"r{i}@example.org") for i in range(recipients)]
    mail = Mail(reverse_path="a@example.org")
    start = time.perf_counter()
    for _ in range(count):
        batch = client.send(mail) + b"".join(client.send(r) for r in rcpts) + client.send(Data())
        server.receive_data(batch)
        _drain(client, _serve(server))
        server.receive_data(client.send(MessageData(data=body)) + client.send(EndOfMessage()))
        _drain(client, _serve(server))
    return count / (time.perf_counter() - start)


def stuffing(body: bytes, chunk: int = 65536) -> float:
    """MB/s of the client's dot-stuffing (DotStuffer through send())."""
    from smtpproto._data import DotStuffer

    stuffer = DotStuffer(max_line=1000)
    view = memoryview(body)
    start = time.perf_counter()
    for offset in range(0, len(body), chunk):
        stuffer.stuff(view[offset : offset + chunk])
    stuffer.end()
    return len(body) / (time.perf_counter() - start) / 1e6


def unstuffing(body: bytes, chunk: int = 65536) -> float:
    """MB/s of the server's unstuffing (DotUnstuffer on a receive buffer)."""
    from smtpproto._data import END_OF_DATA, DotStuffer, DotUnstuffer

    stuffer = DotStuffer(max_line=None)
    wire = stuffer.stuff(body) + stuffer.end()
    unstuffer = DotUnstuffer()
    buffer = bytearray()
    start = time.perf_counter()
    for offset in range(0, len(wire), chunk):
        buffer += wire[offset : offset + chunk]
        while True:
            result = unstuffer.extract(buffer)
            if result is None or result is END_OF_DATA:
                break
    return len(wire) / (time.perf_counter() - start) / 1e6


def measure(run: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    values = [run() for _ in range(repeats)]
    return statistics.median(values), min(values), max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with tiny counts")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    scale = 0.02 if args.quick else 1.0
    rows: list[tuple[str, str, tuple[float, float, float]]] = []
    for size, label in ((1024, "1 KB"), (102400, "100 KB")):
        body = make_body(size)
        for recipients in (1, 10):
            count = max(5, int((2000 if size == 1024 else 200) * scale))
            result = measure(lambda: transactions(body, recipients, count), repeats)
            rows.append((f"core transactions, {label}, {recipients} rcpt", "tx/s", result))
    for share, label in ((0.0, "clean"), (0.01, "1% dot lines")):
        big = make_body(int(10_000_000 * scale), dot_share=share)
        stuffed = measure(lambda: stuffing(big), repeats)
        rows.append((f"DATA stuffing, 10 MB, {label}", "MB/s", stuffed))
        unstuffed = measure(lambda: unstuffing(big), repeats)
        rows.append((f"DATA unstuffing, 10 MB, {label}", "MB/s", unstuffed))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'benchmark':<{width}}  {'median':>10}  {'min-max':>21}  unit")
    for name, unit, (median, low, high) in rows:
        print(f"{name:<{width}}  {median:>10.1f}  {low:>10.1f}-{high:<10.1f}  {unit}")
    if args.quick:
        print("(quick mode: figures are not meaningful)")


if __name__ == "__main__":
    main()
