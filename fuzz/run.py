#!/usr/bin/env python3
"""Run the fuzz targets under atheris for a fixed time each.

Usage::

    python3 fuzz/run.py --seconds N [--scratch DIR] [target ...]

Theory of operation
-------------------
Each target (all of :data:`TARGETS` by default) runs in its own process,
``python3 fuzz/<target>.py`` with libFuzzer's options: ``-max_total_time``
for the time, the SMTP dictionary ``fuzz/smtp.dict``, a per-input timeout,
and two corpus folders: the scratch one first (libFuzzer writes the new
inputs it finds there) and the seed corpus ``fuzz/corpus/<target>/``
(read only).  The scratch folder (``fuzz/scratch/`` by default, ignored by
git) keeps the corpus between runs, so long runs build on each other;
crashes go to ``<scratch>/crashes/<target>/``.

The runner prints each target's executions and time (libFuzzer's final
statistics), and on a crash the crashing input, the command that replays
it, and exits 1.  Any other failure to run (atheris missing, say) exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS", "Result", "main", "run_target"]

HERE = Path(__file__).resolve().parent
#: The fuzz targets, each a file ``fuzz/<name>.py``.
TARGETS = ("server_core", "client_core", "command_parser", "reply_parser")

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


@dataclass
class Result:
    """One target's run."""

    target: str
    returncode: int
    executions: int
    seconds: float
    crashes: list[Path]
    log: Path


def run_target(target: str, seconds: int, scratch: Path) -> Result:
    """Run *target* for *seconds*; its output goes to a log in *scratch*."""
    corpus = scratch / "corpus" / target
    crashes = scratch / "crashes" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    log = scratch / f"{target}.log"
    before = set(crashes.iterdir())
    command = [
        sys.executable,
        str(HERE / f"{target}.py"),
        f"-max_total_time={seconds}",
        f"-dict={HERE / 'smtp.dict'}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-max_len=8192",
        "-print_final_stats=1",
        f"-artifact_prefix={crashes}/",
        str(corpus),
        str(HERE / "corpus" / target),
    ]
    # smtpproto from this checkout, installed or not.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    started = time.monotonic()
    with log.open("wb") as out:
        # Generous: instrumentation and the corpus' first pass come before
        # libFuzzer's clock starts.
        process = subprocess.run(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=seconds * 3 + 300,
            check=False,
        )
    elapsed = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    executions = 0
    for pattern in (_EXECS, _DONE):
        found = pattern.findall(text)
        if found:
            executions = int(found[-1][0] if isinstance(found[-1], tuple) else found[-1])
            break
    new = sorted(set(crashes.iterdir()) - before)
    return Result(target, process.returncode, executions, elapsed, new, log)


def _report_crash(result: Result) -> None:
    print(f"!! {result.target}: crashed (libFuzzer exit {result.returncode}); log: {result.log}")
    text = result.log.read_text("utf-8", "replace")
    start = text.find("=== Uncaught Python exception")
    if start >= 0:
        print(text[start : start + 4000])
    for path in result.crashes:
        data = path.read_bytes()
        print(f"crashing input ({len(data)} octets): {path}")
        print(f"  {data!r}")
        print(f"replay: python3 fuzz/{result.target}.py {path}")


def main(argv: list[str] | None = None) -> int:
    """Run the targets; 0 when none crashed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, required=True, help="time per target")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=HERE / "scratch",
        help="where the growing corpus, crashes and logs go (default: fuzz/scratch)",
    )
    parser.add_argument(
        "targets", nargs="*", metavar="target", help=f"any of {', '.join(TARGETS)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed: python3 -m pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    status = 0
    for target in args.targets or TARGETS:
        try:
            result = run_target(target, args.seconds, args.scratch.resolve())
        except subprocess.TimeoutExpired:
            print(f"!! {target}: did not stop in time (a hang?); see {args.scratch}/{target}.log")
            status = 1
            continue
        rate = result.executions / result.seconds if result.seconds else 0.0
        print(
            f"{target:15} {result.executions:>10} inputs in {result.seconds:6.1f} s "
            f"({rate:,.0f}/s), exit {result.returncode}"
        )
        if result.crashes or result.returncode != 0:
            _report_crash(result)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
