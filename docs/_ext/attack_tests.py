"""Keep the pages' test names true to ``tests/``.

The security page names, for each attack class, the tests that show how
the library handles it; other pages name tests too.  At every build:

* every test named on a page (a ``test_...`` function or ``Test...``
  class) must exist in ``tests/``;
* every attack test (``def test_attack_...``) in ``tests/`` must be named
  on the page given by ``attack_tests_page`` in ``conf.py``, so a new
  attack test cannot go unexplained.

A miss is a build warning (an error under ``-W``).  Without a ``tests/``
folder beside ``docs/`` (a source distribution, say) nothing is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.typing import ExtensionMetadata

logger = logging.getLogger(__name__)

_DEFINED = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+((?:test_|Test)\w+)", re.MULTILINE)
_NAMED = re.compile(r"``((?:test_|Test)[A-Za-z0-9_]+)``")


def _check(app: Sphinx, env: BuildEnvironment) -> None:
    tests = Path(app.srcdir).parent / "tests"
    if not tests.is_dir():
        logger.info("no tests/ folder: the test names on the pages are not checked")
        return
    defined: set[str] = set()
    for path in sorted(tests.rglob("*.py")):
        defined.update(_DEFINED.findall(path.read_text(encoding="utf-8")))
    page = app.config.attack_tests_page
    named_on_page: set[str] = set()
    for docname in sorted(env.found_docs):
        source = Path(env.doc2path(docname))
        named = set(_NAMED.findall(source.read_text(encoding="utf-8")))
        for name in sorted(named - defined):
            logger.warning("%s names %s, which tests/ does not define", docname, name, location=docname)
        if docname == page:
            named_on_page = named
    for name in sorted(name for name in defined if name.startswith("test_attack_")):
        if name not in named_on_page:
            logger.warning("the attack test %s is not named on the %s page", name, page, location=page)


def setup(app: Sphinx) -> ExtensionMetadata:
    app.add_config_value("attack_tests_page", "security", "env", types=[str])
    app.connect("env-check-consistency", _check)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
