"""Sphinx configuration for the smtpproto documentation.

Build (warnings are errors)::

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing here needs the network: no intersphinx, no external binaries.
"""

from __future__ import annotations

import sys
from pathlib import Path

import smtpproto

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
]

exclude_patterns = ["_build"]
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = []
# Without intersphinx the standard library has no inventory to resolve
# against; builtins are resolved by Sphinx itself, these are not.
nitpick_ignore_regex = [
    ("py:class", r"(collections\.abc|enum|typing|types)\..*"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"smtpproto {release}"
