"""The command line: ``python -m smtpproto``."""

from __future__ import annotations

import io
import subprocess
import sys

from smtpproto.__main__ import main, run_demo


def test_help_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "smtpproto", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout
    assert out.stderr == ""


def test_no_command_prints_usage_and_fails() -> None:
    assert main([]) == 2


def test_demo_prints_a_whole_session() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "smtpproto", "demo"], capture_output=True, text=True, check=True
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("S: 220 server.example")
    assert "C: EHLO client.example" in lines
    assert "C: DATA" in lines and "S: 354 End data with <CR><LF>.<CR><LF>" in lines
    assert "C: .." in lines  # the lone dot of the body, stuffed on the wire
    assert "S: 250 2.0.0 Message accepted for delivery" in lines
    assert lines[-2] == "S: 221 2.0.0 Bye"
    assert lines[-1].endswith("identical to what was sent: True")


def test_run_demo_in_process() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    assert "C: QUIT" in out.getvalue()
