"""Sphinx configuration for the smtpproto documentation.

Build (warnings are errors)::

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing here needs the network: no intersphinx, no external binaries.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import smtpproto

# The API reference documents the trio adapter and the Hypothesis
# strategies, so it imports both.
_missing = [name for name in ("trio", "hypothesis") if importlib.util.find_spec(name) is None]
if _missing:
    raise RuntimeError(
        f"the API reference imports {' and '.join(_missing)}: "
        "python3 -m pip install -e '.[docs]'"
    )

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "smtpproto"
author = "the smtpproto maintainers"
copyright = "the smtpproto maintainers"
release = smtpproto.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "smtp_states",
    "public_names",
    "cli_options",
    "attack_tests",
    "transcripts",
    "interop_matrix",
]

exclude_patterns = ["_build"]
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = []
# Without intersphinx the standard library has no inventory to resolve
# against; builtins are resolved by Sphinx itself, these are not.
nitpick_ignore_regex = [
    ("py:class", r"(collections\.abc|enum|typing|types)\..*"),
    # The standard library (no intersphinx inventory to link to).
    ("py:.*", r"(asyncio|email|selectors|smtplib|socket|ssl|threading)(\..*)?"),
    # Third-party libraries the adapters and strategies are built on.
    ("py:class", r"(hypothesis|st|trio)\..*"),
    # Type variables of generic signatures.
    ("py:class", r"smtpproto\.[\w.]*\.T"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"smtpproto {release}"


def _dataclass_factories(
    app: object, what: str, name: str, obj: object, options: object,
    signature: str | None, return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show a dataclass field made by ``default_factory`` as ``...``.

    The signature of such a class holds ``=<factory>``, which does not
    parse as Python, so Sphinx would split it at every comma instead.
    """
    if signature is None or "<factory>" not in signature:
        return None
    return signature.replace("<factory>", "..."), return_annotation


def setup(app: object) -> None:
    app.connect("autodoc-process-signature", _dataclass_factories)  # type: ignore[attr-defined]
