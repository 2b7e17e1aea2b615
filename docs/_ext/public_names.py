"""Tie the API reference to the public names of smtpproto.

* Annotations and base classes name objects by where they are defined
  (``smtpproto._events.Reply``); the reference documents them where they
  are exported (``smtpproto.Reply``).  A ``missing-reference`` handler
  retries such a target under its public name.
* Every name in ``smtpproto.__all__`` and ``smtpproto.extensions.__all__``
  must be documented; a name missing from ``api.rst`` is a build warning
  (an error under ``-W``).  A name exported by both modules (the same
  object) is documented once.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.typing import ExtensionMetadata

PUBLIC_MODULES = ("smtpproto", "smtpproto.extensions")

logger = logging.getLogger(__name__)


@functools.cache
def _public_names() -> dict[str, tuple[str, ...]]:
    """Where each exported class or function is defined -> its public names."""
    names: dict[str, tuple[str, ...]] = {}
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj: Any = getattr(module, name)
            if isinstance(obj, type) or callable(obj):
                defined = f"{obj.__module__}.{obj.__qualname__}"
                names[defined] = (*names.get(defined, ()), f"{modname}.{name}")
    return names


def _candidates(target: str) -> tuple[str, ...]:
    """``smtpproto.Reply.code`` for ``smtpproto._events.Reply.code``."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        public = _public_names().get(".".join(parts[:cut]), ())
        if public:
            return tuple(".".join([name, *parts[cut:]]) for name in public)
    return ()


def _resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    domain = env.domains["py"]
    for public in _candidates(node["reftarget"]):
        if public != node["reftarget"] and public in domain.objects:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
            )
    return None


def _check_coverage(app: Sphinx, env: BuildEnvironment) -> None:
    documented = env.domains["py"].objects
    exported: list[tuple[str, Any]] = []
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        exported += [(f"{modname}.{name}", getattr(module, name)) for name in module.__all__]
    # An object exported under two names needs documenting under one only.
    seen = {id(obj) for full, obj in exported if full in documented}
    for full, obj in exported:
        if full not in documented and id(obj) not in seen:
            logger.warning("%s is exported in __all__ but not documented in the API page", full)


def setup(app: Sphinx) -> ExtensionMetadata:
    app.connect("missing-reference", _resolve)
    app.connect("env-check-consistency", _check_coverage)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
