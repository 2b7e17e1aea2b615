"""Layering: the core does no I/O and imports no networking module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import smtpproto

PACKAGE = Path(smtpproto.__file__).parent
CORE_MODULES = sorted(
    [p for p in PACKAGE.glob("_*.py") if p.name != "__main__.py"]
    + list((PACKAGE / "extensions").glob("*.py"))
)
# The flows and the SASL mechanisms sit below the adapters too: no I/O there.
NO_IO_MODULES = CORE_MODULES + sorted(
    list((PACKAGE / "flows").glob("*.py")) + list((PACKAGE / "sasl").glob("*.py"))
)
FORBIDDEN = {"socket", "selectors", "ssl", "asyncio", "trio", "threading", "time"}


def test_import_smtpproto_pulls_in_no_io_modules() -> None:
    code = (
        "import sys, smtpproto, smtpproto.extensions; "
        "print(sorted(m for m in ('asyncio', 'trio', 'ssl', 'socket', 'selectors') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_core_modules_import_no_io_or_clock() -> None:
    assert len(CORE_MODULES) >= 12
    for path in NO_IO_MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_core_modules_start_with_a_theory_of_operation() -> None:
    for path in CORE_MODULES:
        if path.name == "__init__.py":
            continue
        head = path.read_text(encoding="utf-8").splitlines()[0]
        assert head == "# Theory of operation", path.name


def test_every_public_name_has_a_docstring() -> None:
    import smtpproto.extensions as extensions

    for module in (smtpproto, extensions):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, (str, dict)) or type(obj).__module__ == "types":
                continue
            if isinstance(obj, (tuple, smtpproto.Sentinel)):
                continue
            assert getattr(obj, "__doc__", None), f"{module.__name__}.{name} has no docstring"
