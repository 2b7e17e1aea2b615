"""Tie the API reference to the public names of smtpproto.

* Annotations and base classes name objects by where they are defined
  (``smtpproto._events.Reply``); the reference documents them where they
  are exported (``smtpproto.Reply``).  A ``missing-reference`` handler
  retries such a target under its public name.
* Every public module of the package (every module whose dotted name has
  no part starting with an underscore, except the command line) is found
  by walking the package, so a new module or layer cannot be forgotten.
  Every name in its ``__all__`` must be documented in the API page, under
  that name or under another public name of the same object
  (``smtpproto.Capabilities`` is ``smtpproto.extensions.Capabilities``;
  ``smtpproto.flows.client.ClientSession`` is
  ``smtpproto.flows.ClientSession``).  A name documented nowhere is a build
  warning (an error under ``-W``).
* A docstring may name an object the way the module that wrote it sees it
  (``:class:`Reply``` in ``smtpproto.flows.server``, which imports
  ``Reply``); such a reference resolves to that object's public entry.
* A base class that is private (``smtpproto.sasl._base.ClientFirst``) is
  shown as its nearest public ancestors in ``:show-inheritance:``.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.typing import ExtensionMetadata

#: Public modules documented as programs, not as an API (the quickstart
#: page describes the command line).
NOT_API = ("smtpproto.__main__", "smtpproto.cli")

logger = logging.getLogger(__name__)


@functools.cache
def public_modules() -> tuple[ModuleType, ...]:
    """``smtpproto`` and every public module under it, in walking order."""
    package = importlib.import_module("smtpproto")
    modules = [package]
    for info in pkgutil.walk_packages(package.__path__, "smtpproto."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")[1:]):
            continue
        if any(name == skip or name.startswith(skip + ".") for skip in NOT_API):
            continue
        modules.append(importlib.import_module(name))
    return tuple(modules)


def _exported() -> list[tuple[str, Any]]:
    """``(public name, object)`` for every name in a public ``__all__``."""
    return [
        (f"{module.__name__}.{name}", getattr(module, name))
        for module in public_modules()
        for name in getattr(module, "__all__", ())
    ]


@functools.cache
def _public_names() -> dict[str, tuple[str, ...]]:
    """Where each exported class or function is defined -> its public names."""
    names: dict[str, tuple[str, ...]] = {}
    for full, obj in _exported():
        qualname = getattr(obj, "__qualname__", None)
        # Classes and functions; not modules, type aliases or constants.
        if isinstance(qualname, str) and (isinstance(obj, type) or callable(obj)):
            defined = f"{obj.__module__}.{qualname}"
            names[defined] = (*names.get(defined, ()), full)
    return names


def _candidates(target: str) -> tuple[str, ...]:
    """``smtpproto.Reply.code`` for ``smtpproto._events.Reply.code``."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        public = _public_names().get(".".join(parts[:cut]), ())
        if public:
            return tuple(".".join([name, *parts[cut:]]) for name in public)
    return ()


def _as_seen_by_writer(node: pending_xref) -> str | None:
    """Where the object named by *node* is defined, looking the name up in
    the module whose docstring holds the reference."""
    where = node.get("py:module")
    if not where:
        return None
    try:
        scope: Any = importlib.import_module(where)
        for part in (node.get("py:class") or "").split("."):
            if part:
                scope = getattr(scope, part)
        writer = importlib.import_module(scope.__module__)
        head, _, rest = node["reftarget"].partition(".")
        obj = getattr(writer, head)
    except (ImportError, AttributeError, TypeError):
        return None
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str):
        return None
    return ".".join(filter(None, (obj.__module__, qualname, rest)))


def _resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    domain = env.domains["py"]
    targets = [node["reftarget"]]
    seen_by_writer = _as_seen_by_writer(node)
    if seen_by_writer is not None:
        targets.append(seen_by_writer)
    for target in targets:
        for public in (target, *_candidates(target)):
            if public != node["reftarget"] and public in domain.objects:
                return domain.resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
                )
    return None


def _is_public(cls: type) -> bool:
    if cls.__module__ == "builtins" or not cls.__module__.startswith("smtpproto"):
        return True
    return f"{cls.__module__}.{cls.__qualname__}" in _public_names()


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Replace private base classes by their nearest public ancestors."""
    result: list[type] = []
    for base in bases:
        stack = [base]
        while stack:
            cls = stack.pop(0)
            if _is_public(cls):
                if cls not in result:
                    result.append(cls)
            else:
                stack.extend(cls.__bases__)
    bases[:] = result


def _check_coverage(app: Sphinx, env: BuildEnvironment) -> None:
    documented = env.domains["py"].objects
    exported = _exported()
    # An object exported under several names needs documenting under one.
    seen = {id(obj) for full, obj in exported if full in documented}
    reported: set[int] = set()
    for full, obj in exported:
        if full not in documented and id(obj) not in seen and id(obj) not in reported:
            reported.add(id(obj))
            logger.warning("%s is exported in __all__ but not documented in the API page", full)


def setup(app: Sphinx) -> ExtensionMetadata:
    app.connect("missing-reference", _resolve)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("env-check-consistency", _check_coverage)
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
