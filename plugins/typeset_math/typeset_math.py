"""The ``typeset_math`` filter: typeset a built page's maths at build time.

``FILTERS = {".html": ["typeset_math", ...]}`` in conf.py runs it on every
HTML file Nikola writes. A file with no math element (docutils writes
``<span class="math">`` and ``<div class="math">``) is left alone without
starting Node; any other goes through ``scripts/typeset_math.mjs`` (MathJax
3.2.2 from the pinned ``mathjax-full`` npm package), which replaces the TeX
with SVG and assistive MathML, so pages load no MathJax script. A TeX error
fails the build with the file, the formula and MathJax's message.

Filters are not part of a task's up-to-date check, so the plugin puts a
digest of the typesetter (this file, the script and package-lock.json, which
pins MathJax) into the global template context: every page depends on that, and
changing either rebuilds the pages.
"""

import hashlib
import os
import re
import shutil
import subprocess

from nikola.plugin_categories import ConfigPlugin

SITE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(SITE_ROOT, "scripts", "typeset_math.mjs")
LOCKFILE = os.path.join(SITE_ROOT, "package-lock.json")
MATH_ELEMENT = re.compile(rb'<(?:span|div)(?:\s[^>]*?)?\sclass="(?:[^"]*\s)?math[\s"]')


class TypesetMathError(Exception):
    """MathJax could not typeset a page's maths."""


def typesetter_digest():
    """SHA-256 of this filter, the typesetting script and the lockfile that pins MathJax."""
    digest = hashlib.sha256()
    for path in (os.path.abspath(__file__), SCRIPT, LOCKFILE):
        with open(path, "rb") as file:
            digest.update(file.read())
    return digest.hexdigest()


def typeset_math(path):
    """Typeset the maths of the HTML file ``path`` in place (a Nikola filter)."""
    with open(path, "rb") as file:
        if not MATH_ELEMENT.search(file.read()):
            return
    node = shutil.which("node")
    if node is None:
        raise TypesetMathError("typeset_math: node is not installed (make setup installs npm and Node)")
    result = subprocess.run([node, SCRIPT, path], capture_output=True, text=True)
    if result.returncode != 0:
        raise TypesetMathError((result.stderr or result.stdout).strip() or f"typeset_math: {path}: node failed")


class Plugin(ConfigPlugin):
    """Registers the ``typeset_math`` filter and makes every page depend on the typesetter."""

    name = "typeset_math"

    def set_site(self, site):
        site.register_filter("typeset_math", typeset_math)
        site._GLOBAL_CONTEXT["math_typesetter"] = typesetter_digest()
        return super().set_site(site)
