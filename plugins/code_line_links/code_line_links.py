"""The ``code_line_links`` filter: the links Pygments puts on code lines, made accessible.

Run by ``FILTERS = {".html": [..., "code_line_links"]}`` in conf.py on every
HTML file Nikola writes, it fixes two kinds of link that have no accessible
name (axe: link-name):

* a listing's line numbers (Nikola's formatter, ``linenos="table"``) are
  links whose only content is an empty ``<code data-line-number="12">``: the
  number is CSS generated content, so that copying code leaves it out. The
  filter names each one: ``aria-label="Line 12"``.
* a code block in a post (``lineanchors``, no line numbers) starts every line
  with an empty ``<a id="X-3" name="X-3" href="#X-3"></a>``: an invisible
  link in the tab order. The filter drops its ``href``; the anchor stays, so
  ``#X-3`` still leads to the line.

Filters are not part of a task's up-to-date check, so the plugin puts a
digest of this file into the global template context, which every page
depends on: changing the filter rebuilds the pages.
"""

import hashlib
import os
import re
import tempfile

from nikola.plugin_categories import ConfigPlugin

LINE_NUMBER_LINK = re.compile(r'(<a href="#[^"<>]*-(\d+)"(?: class="special")?)(><code data-line-number=")')
EMPTY_LINE_ANCHOR = re.compile(r'<a id="([^"<>]+)" name="\1" href="#\1"></a>')


def fix_links(html):
    """``html`` with line-number links named ``Line N`` and empty line-anchor links made plain anchors."""
    html = LINE_NUMBER_LINK.sub(r'\1 aria-label="Line \2"\3', html)
    return EMPTY_LINE_ANCHOR.sub(r'<a id="\1" name="\1"></a>', html)


def code_line_links(path):
    """Fix the code-line links of the HTML file ``path``, in place (a Nikola filter)."""
    with open(path, encoding="utf-8") as file:
        html = file.read()
    if "data-line-number" not in html and 'name="' not in html:
        return
    fixed = fix_links(html)
    if fixed == html:
        return
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".code-lines-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(fixed)
        os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class Plugin(ConfigPlugin):
    """Registers the ``code_line_links`` filter."""

    name = "code_line_links"

    def set_site(self, site):
        site.register_filter("code_line_links", code_line_links)
        with open(os.path.abspath(__file__), "rb") as file:
            site._GLOBAL_CONTEXT["code_line_links"] = hashlib.sha256(file.read()).hexdigest()
        return super().set_site(site)
