"""The fuzz targets under ``fuzz/`` run without atheris, over their seeds.

Theory of operation
-------------------
The coverage-guided fuzzers need atheris (the ``fuzz`` extra), which CI
runs for a short time only; these tests keep the targets from rotting
between runs, atheris or not: every file of every seed corpus goes
through its target's ``test_one_input`` exactly as libFuzzer would pass
it, the corpus on disk is the one ``fuzz/seeds.py`` writes, and every
seed is a valid input: a real transcript runs to a clean end (221, no
protocol error, nothing refused, its message delivered), and a
``hostile-*`` one is refused as PROTOCOL.md §3 says.  A short hypothesis
run feeds each target random inputs too, and the runner's command line is
checked.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto import State

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import client_core  # noqa: E402
import harness  # noqa: E402
import run as runner  # noqa: E402
import seeds  # noqa: E402
import server_core  # noqa: E402

TARGETS = ("server_core", "client_core", "command_parser", "reply_parser")


def target(name: str) -> ModuleType:
    return importlib.import_module(name)


def corpus(name: str) -> list[Path]:
    return sorted((FUZZ / "corpus" / name).iterdir())


SEED_FILES = [(name, path) for name in TARGETS for path in corpus(name)]


def test_the_runner_knows_every_target() -> None:
    assert runner.TARGETS == TARGETS
    for name in TARGETS:
        assert (FUZZ / f"{name}.py").is_file()
        assert corpus(name), f"{name} has no seeds"


def test_the_corpus_is_what_seeds_py_writes() -> None:
    assert sorted(seeds.SEEDS) == sorted(TARGETS)
    for name, files in seeds.SEEDS.items():
        for filename, data in files.items():
            path = FUZZ / "corpus" / name / filename
            assert path.read_bytes() == data, f"{path} is stale: run python3 fuzz/seeds.py"


@pytest.mark.parametrize(
    ("name", "path"), SEED_FILES, ids=[f"{name}/{path.name}" for name, path in SEED_FILES]
)
def test_every_seed_runs_through_its_target(name: str, path: Path) -> None:
    target(name).test_one_input(path.read_bytes())


@pytest.mark.parametrize(
    "path", corpus("server_core"), ids=[path.name for path in corpus("server_core")]
)
def test_server_seeds_are_real_sessions_or_refused_attacks(path: Path) -> None:
    data = path.read_bytes()
    outcome = server_core.run(data)
    if path.name.startswith("hostile-"):
        # Nothing delivered; the attack ends the session or is refused.
        assert outcome.delivered == 0
        assert outcome.error is not None or any(code >= 500 for code in outcome.codes)
        return
    assert outcome.error is None
    assert outcome.rejected == 0
    assert outcome.state is State.CLOSED and outcome.codes[-1] == 221
    stream = b"".join(harness.decode(data).pieces).upper()
    has_message = b"\nDATA\r\n" in stream or b"\nBDAT " in stream
    assert outcome.delivered == (1 if has_message else 0)


@pytest.mark.parametrize(
    "path", corpus("client_core"), ids=[path.name for path in corpus("client_core")]
)
def test_client_seeds_are_real_sessions_or_refused_attacks(path: Path) -> None:
    outcome = client_core.run(path.read_bytes())
    if path.name.startswith("hostile-"):
        assert outcome.error is not None
        assert outcome.state is State.ERROR
        return
    assert outcome.error is None
    assert outcome.refused == 0, "the scripted client met a state its seed did not plan"
    assert outcome.message_sent
    assert outcome.state is State.CLOSED and outcome.codes[-1] == 221


def test_reply_seeds_hold_replies() -> None:
    reply_parser = target("reply_parser")
    for path in corpus("reply_parser"):
        assert reply_parser.run(path.read_bytes()), path.name


def test_command_seeds_are_mostly_commands() -> None:
    command_parser = target("command_parser")
    results = [command_parser.run(path.read_bytes()) for path in corpus("command_parser")]
    assert set(results) <= {"parsed", "refused"}
    # Only the lines of the hostile transcripts are refused.
    assert results.count("refused") <= 2


@pytest.mark.parametrize("mode", [0, 9])
@pytest.mark.parametrize("eof", [False, True])
def test_the_input_format_round_trips(mode: int, eof: bool) -> None:
    pieces = [b"EHLO x\r\n", b"\xff", b"MAIL FROM:<>\r\n"]
    decoded = harness.decode(harness.encode(mode, "?", pieces, eof=eof))
    assert decoded == harness.FuzzInput(mode=mode, policy=ord("?"), eof=eof, pieces=tuple(pieces))


def test_the_input_format_refuses_pieces_it_cannot_hold() -> None:
    with pytest.raises(ValueError):
        harness.encode(0, "0", [b""])
    with pytest.raises(ValueError):
        harness.encode(0, "0", [b"a" + harness.SPLIT])
    with pytest.raises(ValueError):
        harness.encode(10, "0", [b"a"])


@settings(deadline=None, max_examples=40)
@given(name=st.sampled_from(TARGETS), data=st.binary(max_size=300))
def test_targets_take_any_input(name: str, data: bytes) -> None:
    target(name).test_one_input(data)


@settings(deadline=None, max_examples=40)
@given(
    name=st.sampled_from(["server_core", "client_core"]),
    mode=st.integers(0, 9),
    policy=st.integers(0, 255),
    pieces=st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    eof=st.booleans(),
)
def test_targets_take_any_split(
    name: str, mode: int, policy: int, pieces: list[bytes], eof: bool
) -> None:
    pieces = [piece for piece in pieces if harness.SPLIT not in piece]
    target(name).test_one_input(harness.encode(mode, policy, pieces, eof=eof))


def test_the_runner_refuses_unknown_targets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        runner.main(["--seconds", "1", "no_such_target"])
    assert exit_.value.code == 2
    assert "unknown targets no_such_target" in capsys.readouterr().err
