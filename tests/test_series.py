"""The site reads as one series: a start page, one notation, figures and tables that name their source, a licence.

The source-level checks run on the reST; the built-site checks share the
session's ``built_site`` fixture with ``test_site.py``.
"""

import re

import pytest

from conftest import REPO_ROOT

POSTS_DIR = REPO_ROOT / "posts"
PAGES_DIR = REPO_ROOT / "pages"
START = PAGES_DIR / "start.rst"


def metadata(path, field):
    match = re.search(rf"^\.\. {field}: (.*)$", path.read_text(), re.M)
    return match.group(1).strip() if match else None


# The series is the posts in date order; the pager and the start page must agree with it.
SERIES = sorted(POSTS_DIR.glob("*.rst"), key=lambda post: metadata(post, "date"))
SLUGS = [metadata(post, "slug") for post in SERIES]
SOURCES = SERIES + sorted(PAGES_DIR.glob("*.rst"))


def section(text, title):
    """The body of the reST section ``title`` (up to the next section of the same level)."""
    match = re.search(rf"^{re.escape(title)}\n([-~=])\1+\n(.*?)(?=^\S[^\n]*\n\1\1\1+\n|\Z)", text, re.M | re.S)
    assert match, f"no section {title!r}"
    return match.group(2)


def test_the_start_page_lists_every_post_in_reading_order():
    reading_order = section(START.read_text(), "Reading order")
    assert re.findall(r"<link://slug/([\w-]+)>", reading_order) == SLUGS


def test_the_start_page_names_the_listings_each_post_quotes():
    rows = section(START.read_text(), "Reading order").split("   * - ")[2:]  # after the header row
    assert len(rows) == len(SERIES)
    for post, row in zip(SERIES, rows, strict=True):
        quoted = set(re.findall(r"^\.\. listing:: listings/vae/(\w+\.py)", post.read_text(), re.M))
        linked = re.findall(r"</listings/vae/(\w+\.py)\.html>", row)
        assert set(linked) == quoted and len(linked) == len(quoted), (post.name, linked, sorted(quoted))


def test_the_first_post_announces_the_rest_of_the_series_in_order():
    whats_next = section(SERIES[0].read_text(), "What's next")
    assert re.findall(r"<link://slug/([\w-]+)>", whats_next) == SLUGS[1:]
    assert "/pages/start/" in whats_next


def math_and_table_symbols(text):
    """Inline and display maths, and the plain 'K = 2'-style labels of tables, as one string per item."""
    inline = re.findall(r":math:`([^`]*)`", text)
    display = re.findall(r"^\.\. math::\n((?:\n|[ \t]+.*\n)*)", text, re.M)
    labels = re.findall(r"\b[A-Za-z] = \d", text)
    return inline + display + labels


# One symbol, one meaning (the start page's table). K, k and f_k belong to normalizing flows; the
# latent dimension is d; the importance-weighted bound's sample count is S in training and M in scoring.
def single_letter(letters):
    """A regex for a one-letter symbol (also as a subscript or argument), not part of a name or a command."""
    return r"(?<![\\A-Za-z0-9])(" + letters + r")(?![A-Za-z0-9])"


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem[:40] for s in SOURCES])
def test_one_notation_across_the_series(source):
    text = source.read_text()
    items = math_and_table_symbols(text)
    assert not [item for item in items if "\\mathbb{R}^K" in item], "the latent dimension is d"
    if source.stem not in ("normalizing-flows-in-keras", "start"):
        flow_symbols = [item for item in items if re.search(single_letter("K|k"), item)]
        # The IWAE post names the paper's own letter once.
        allowed = ["k"] if "Burda et al. call the" in re.sub(r"\s+", " ", text) else []
        assert [item for item in flow_symbols if item not in allowed] == [], "K and k are the flow's length and step"


def test_the_notation_table_defines_each_shared_symbol_once():
    table = section(START.read_text(), "Notation")
    first_column = re.findall(r"^   \* - (.*)$", table, re.M)[1:]
    symbols = [symbol for cell in first_column for symbol in re.findall(r":math:`([^`]*)`", cell)]
    assert len(symbols) == len(set(symbols)), "a symbol defined twice"
    for symbol in ("d", "D", "S", "M", "K", "J", "B", "N", "\\mathcal{L}_S(\\mathbf{x})"):
        assert symbol in symbols, symbol


def figure_blocks(text):
    return re.findall(r"^\.\. figure:: (\S+)\n((?:\n|   .*\n)*)", text, re.M)


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem[:40] for s in SOURCES])
def test_every_figure_and_table_names_the_script_that_made_it(source):
    text = source.read_text()
    for image, block in figure_blocks(text):
        scripts = re.findall(r"^   Source: `scripts/(\w+\.py) </scripts/\1\.html>`__\.$", block, re.M)
        assert len(scripts) == 1, f"{source.name}: {image} has no one-line Source link"
        script = REPO_ROOT / "scripts" / scripts[0]
        assert script.is_file() and image.rsplit("/", 1)[-1].split(".")[0] in script.read_text(), (image, script)
    for table in re.finditer(r"^\.\. list-table::.*\n((?:\n|   .*\n)*)", text, re.M):
        if "{{% result" not in table.group(1):
            continue
        following = text[table.end() :].lstrip("\n").split("\n", 1)[0]
        assert following.startswith("Source: "), f"{source.name}: a table of results without its source line"
        for script in re.findall(r"`scripts/(\w+\.py) </scripts/\1\.html>`__", following):
            assert (REPO_ROOT / "scripts" / script).is_file(), script


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem[:40] for s in SOURCES])
def test_no_record_paths_and_no_narration_in_the_prose(source):
    text = re.sub(r"\{\{%.*?%\}\}", "", source.read_text())  # shortcodes name their records
    text = re.sub(r"^\.\. \w+: .*$", "", text, flags=re.M)  # metadata
    assert not re.findall(r"\b(?:results|images)/[\w/-]+\.json", text), "a record path in the prose"
    prose = re.sub(r"\s+", " ", text).lower()
    for phrase in ("we have not", "not having been able", "an earlier run", "first draft", "could not check"):
        assert phrase not in prose, phrase


def test_the_licences_are_stated_in_the_repository():
    licence = " ".join((REPO_ROOT / "LICENSE").read_text().split())
    assert "MIT licence" in licence and "Creative Commons Attribution 4.0" in licence
    readme = (REPO_ROOT / "README.md").read_text()
    assert "MIT" in readme and "CC BY 4.0" in readme


def test_every_built_page_has_the_licence_in_its_footer(built_site):
    pages = [page for page in built_site.rglob("*.html") if "assets" not in page.parts]
    assert len(pages) > 20
    for page in pages:
        html = page.read_text()
        if "<footer" not in html:
            continue  # listing sources and redirects have no footer
        footer = html[html.index("<footer") :]
        assert "MIT licence" in footer and "CC BY 4.0" in footer, page


def test_the_front_page_and_the_navigation_lead_to_the_start_page(built_site):
    start_link = r'href="(?:\.\./)*/?pages/start/"'  # Nikola writes site links relative to the page
    index = (built_site / "index.html").read_text()
    navigation = index[index.index("<nav") : index.index("</nav>")]
    assert re.search(start_link, navigation), "the navigation bar has no link to the start page"
    main = index[index.index("</nav>") :]
    assert re.search(start_link + r">Start here</a>", main), "the blog index does not point to the start page"
    start = (built_site / "pages" / "start" / "index.html").read_text()
    for slug in SLUGS:
        assert re.search(rf'href="(?:\.\./)*/?posts/{slug}/"', start), slug


def test_each_post_links_to_the_previous_and_next_post_of_the_series(built_site):
    titles = [metadata(post, "title") for post in SERIES]
    for index, slug in enumerate(SLUGS):
        html = (built_site / "posts" / slug / "index.html").read_text()
        pager = re.findall(r'<a href="([^"]+)" rel="(prev|next)">([^<]+)</a>', html)
        expected = []
        if index > 0:
            expected.append((f"../{SLUGS[index - 1]}/", "prev", f"Previous in the series: {titles[index - 1]}"))
        if index < len(SLUGS) - 1:
            expected.append((f"../{SLUGS[index + 1]}/", "next", f"Next in the series: {titles[index + 1]}"))
        assert [(href, rel, " ".join(text.split())) for href, rel, text in pager] == expected, slug


def test_every_listing_is_short_enough_to_copy():
    """The parts a reader copies stay about 300 lines; experiment plumbing lives in scripts/."""
    lengths = {path.name: len(path.read_text().splitlines()) for path in (REPO_ROOT / "listings" / "vae").glob("*.py")}
    assert lengths and max(lengths.values()) <= 335, {name: n for name, n in lengths.items() if n > 335}
