"""The built site: Nikola's own checks, strict builds, maths typeset at build time, page weight,
accessibility (axe-core), and the pages in a real headless Chromium."""

import importlib.util
import os
import re
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import LISTINGS_DIR, MNIST_SUBSET_DIR, POST_SLUG, REPO_ROOT, VENV_BIN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POST_PATH = f"posts/{POST_SLUG}/"
TYPESET_MATH = REPO_ROOT / "scripts" / "typeset_math.mjs"
AXE_SCRIPT = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
MAX_PAGE_BYTES = 3_000_000
# Make every image load now (not lazily on scroll) and wait until all have loaded or failed.
LOAD_ALL_IMAGES = """() => Promise.all(Array.from(document.images).map(img => {
    img.loading = 'eager';
    return img.complete ? null : new Promise(resolve => { img.onload = img.onerror = resolve; });
}))"""
# In a page, the number of math elements without exactly one typeset formula (an SVG in an mjx-container).
UNTYPESET_MATHS = """() => Array.from(document.querySelectorAll('.math')).filter(
    e => e.querySelectorAll(':scope > mjx-container').length !== 1 || !e.querySelector('mjx-container > svg')).length"""


def nikola(*args, cwd=REPO_ROOT):
    return subprocess.run(
        [str(VENV_BIN / "nikola"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.mark.parametrize("check", ["-l", "-f"], ids=["links", "files"])
def test_nikola_check_passes(built_site, check):
    result = nikola("check", check)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def html_pages(site):
    """Every HTML page of a built site, as paths relative to it (the theme's assets left out)."""
    return sorted(page.relative_to(site).as_posix() for page in site.rglob("*.html") if "assets" not in page.parts)


def test_built_pages_load_nothing_from_other_hosts(built_site):
    for page in built_site.rglob("*.html"):
        text = page.read_text()
        resources = re.findall(
            r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=\"((?:https?:)?//[^\"]+)\"", text
        )
        hosts = {urllib.parse.urlsplit(url).hostname for url in resources}
        assert hosts <= {"127.0.0.1"}, (page, hosts)
        assert "disqus" not in text and "googletagmanager" not in text, page


def test_no_page_loads_a_mathjax_script(built_site):
    """The maths are typeset when the site is built: no page has a MathJax script or configuration."""
    assert not (built_site / "assets" / "mathjax").exists()
    for name in html_pages(built_site):
        for attributes, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", (built_site / name).read_text(), re.S):
            assert "mathjax" not in attributes.lower() and "MathJax" not in body, (name, attributes, body[:200])


def test_every_formula_is_typeset_in_the_built_html(built_site):
    """Every math element of every page holds one typeset formula (SVG, assistive MathML), no error."""
    import lxml.html

    formulas = {}
    for name in html_pages(built_site):
        html = (built_site / name).read_text()
        if 'class="math' not in html:
            continue
        document = lxml.html.fromstring(html)
        maths = document.xpath('//*[contains(concat(" ", normalize-space(@class), " "), " math ")]')
        if not maths:
            continue  # class="math" only as text, e.g. in the typesetter's own listing
        formulas[name] = len(maths)
        for element in maths:
            containers = element.xpath("./mjx-container")
            assert len(containers) == 1, (name, lxml.html.tostring(element)[:300])
            assert containers[0].xpath("./svg[@aria-hidden='true']"), (name, "no SVG")
            assert containers[0].xpath("./mjx-assistive-mml/math"), (name, "no assistive MathML")
        assert '<g data-mml-node="merror"' not in html and "data-mjx-error=" not in html and "<mjx-merror" not in html
        # One stylesheet and one font cache per page; every glyph a formula uses is defined in it.
        assert html.count('<style id="MJX-SVG-styles">') == 1 and html.count('id="MJX-SVG-global-cache"') == 1, name
        ids = set(re.findall(r'\bid="([^"]+)"', html))
        missing = set(re.findall(r'xlink:href="#([^"]+)"', html)) - ids
        assert not missing, (name, sorted(missing)[:5])
        # No TeX left in the text a reader sees (code is allowed to show it).
        for article in document.xpath("//article"):
            for code in article.xpath(".//pre | .//code | .//mjx-assistive-mml"):
                code.drop_tree()
            text = article.text_content()
            for delimiter in ("\\(", "\\[", "\\begin{"):
                assert delimiter not in text, (name, delimiter, text[max(0, text.index(delimiter) - 80) :][:200])
    posts = {name for name in formulas if name.startswith("posts/")}
    assert len(posts) >= 5 and all(formulas[name] >= 10 for name in posts), formulas
    assert formulas.get("index.html", 0) >= 1 and formulas.get("pages/performance/index.html", 0) >= 3, formulas


def test_rest_error_fails_the_strict_build(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    names = ("conf.py", "posts", "pages", "listings", "images", "templates", "plugins", "results", "files", "scripts",
             "package.json", "package-lock.json")  # fmt: skip
    for name in names:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, site / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, site / name)
    (site / "node_modules").symlink_to(REPO_ROOT / "node_modules")  # MathJax, for the typeset_math filter
    # The copy builds: the main post, its maths typeset by the filter ...
    result = nikola("build", "--strict", f"output/{POST_PATH}index.html", cwd=site)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "<mjx-container" in (site / "output" / POST_PATH / "index.html").read_text()
    # ... until a post with a reST error makes the strict build fail, because of that post alone.
    broken = site / "posts" / "broken.rst"
    broken.write_text(".. title: Broken\n.. slug: broken\n.. date: 2026-01-01 00:00:00 UTC\n\nA `broken link_ here.\n")
    result = nikola("build", "--strict", cwd=site)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "posts/broken.rst:5" in output and "without end-string" in output, output[-3000:]
    assert re.findall(r"TaskError - taskid:(\S+)", output) == ["render_posts:cache/posts/broken.html"], output[-3000:]
    # The typesetter did not fail (the script itself is published as a listing, so its name appears in the log).
    assert "TypesetMathError" not in output and "TeX error" not in output


def run_typesetter(*paths):
    return subprocess.run(["node", str(TYPESET_MATH), *map(str, paths)], capture_output=True, text=True, timeout=120)


def maths_page(body):
    """A small, otherwise accessible page around ``body``."""
    head = '<!DOCTYPE html>\n<html lang="en"><head><title>Maths</title></head>'
    return f"{head}<body><main><h1>Maths</h1>\n{body}\n</main></body></html>\n"


AMS_PAGE = maths_page(r"""<p>Forward: <span class="math">\(\eqref{eq:later}\)</span>,
inline: <span class="math">\(x^2 + \boldsymbol{\mu}\)</span>.</p>
<div class="math">
\begin{align}
a &amp;= b \label{eq:later} \\
x &amp;= d \tag{$\star$}
\end{align}
</div>
<div class="math" id="named">
\begin{equation*}
x &lt; \mathbb{E}_{q}\left[ \log p(\mathbf{x}) \right]
\end{equation*}
</div>
<div class="math">\[ \begin{aligned} y &amp;= x \\ z &amp;= x \end{aligned} \]</div>
<pre>\(not maths\)</pre>""")


def test_typesetter_renders_ams_environments_labels_tags_and_references(tmp_path, browser):
    page = tmp_path / "ams.html"
    page.write_text(AMS_PAGE)
    result = run_typesetter(page)
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert html.count("<mjx-container") == 5 and html.count("<mjx-assistive-mml") == 5
    assert len(re.findall(r'<mjx-container[^>]*display="true"', html)) == 3  # the display formulas, and only they
    assert "<pre>\\(not maths\\)</pre>" in html  # code is left alone
    # \label, \eqref (a forward reference: resolved) and \tag, in the MathML a screen reader reads.
    assert 'id="mjx-eqn:eq:later"' in html and 'href="#mjx-eqn%3Aeq%3Alater"' in html
    assert html.count("<mtext>(1)</mtext>") == 2 and "<mo>⋆</mo>" in html
    assert "<mo>&lt;</mo>" in html and 'mathvariant="double-struck"' in html  # entities decoded, AMS fonts
    # One font cache: each glyph drawn once, used wherever it appears.
    assert html.count('<path id="MJX-TEX-I-1D465"') == 1 and html.count('xlink:href="#MJX-TEX-I-1D465"') >= 5
    assert run_typesetter(page).returncode == 0 and page.read_text() == html  # typeset once, not twice
    # The result passes axe: the hidden SVG's \eqref link is out of the tab order.
    visit = browser.new_page()
    visit.goto(page.as_uri())
    assert axe_run(visit) == [], "typeset maths fail axe"
    visit.close()


def test_typesetter_leaves_pages_without_maths_alone(tmp_path):
    page = tmp_path / "plain.html"
    text = maths_page(r'<p>No maths, only <code>\(x\)</code> and a <span class="mathematics">class</span>.</p>')
    page.write_text(text)
    before = page.stat().st_mtime_ns
    result = run_typesetter(page)
    assert result.returncode == 0 and page.read_text() == text and page.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "tex, message",
    [
        (r"\(\frac{1}\)", r"TeX error in \frac{1}: Missing argument for \frac"),
        (r"\(\left( x\)", r"TeX error in \left( x: Extra \left or missing \right"),
        (r"\(\undefinedmacro{x}\)", r"TeX error in \undefinedmacro{x}: Undefined control sequence \undefinedmacro"),
        (r"\(\frac{1}{\)", r"no formula (missing delimiters, or unbalanced braces?) in \(\frac{1}{\)"),
        (r"$x$", r"no formula (missing delimiters, or unbalanced braces?) in $x$"),
        (r"\(x\) and \(y\)", r"more than one formula in x and y"),
    ],
    ids=["missing-argument", "missing-right", "undefined-macro", "unbalanced-braces", "no-delimiters", "two-formulas"],
)
def test_tex_error_fails_the_typesetter_with_a_clear_message(tmp_path, tex, message):
    page = tmp_path / "broken.html"
    text = maths_page(f'<p>Good: <span class="math">\\(a^2\\)</span>, bad: <span class="math">{tex}</span>.</p>')
    page.write_text(text)
    result = run_typesetter(page)
    assert result.returncode == 1
    assert f"typeset_math: {page}: {message}" in result.stderr, result.stderr
    assert page.read_text() == text  # left as it was
    assert [path.name for path in tmp_path.iterdir()] == ["broken.html"]  # no temporary file left behind


def load_plugin(name):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", REPO_ROOT / "plugins" / name / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tex_error_fails_the_nikola_filter(tmp_path):
    """The filter the build runs raises, so `nikola build` fails, with the formula and MathJax's message."""
    plugin = load_plugin("typeset_math")
    page = tmp_path / "index.html"
    page.write_text(maths_page(r'<div class="math">\begin{equation*} x_1_2 \end{equation*}</div>'))
    message = r"index.html: TeX error in \begin{equation*} x_1_2 \end{equation*}: Double subscripts"
    with pytest.raises(plugin.TypesetMathError, match=re.escape(message)):
        plugin.typeset_math(str(page))


def test_code_line_links_get_a_name_or_lose_their_href():
    plugin = load_plugin("code_line_links")
    table = '<td class="linenos linenodiv"><a href="#vaetrainpy-12"><code data-line-number="12"></code></a></td>'
    assert 'aria-label="Line 12"' in plugin.fix_links(table)
    line = '<a id="rest_code_ab12-3" name="rest_code_ab12-3" href="#rest_code_ab12-3"></a><span class="k">def</span>'
    assert plugin.fix_links(line) == '<a id="rest_code_ab12-3" name="rest_code_ab12-3"></a><span class="k">def</span>'
    other = '<a id="x" name="x" href="#y"></a><a href="#z">z</a>'
    assert plugin.fix_links(other) == other


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    playwright_api = pytest.importorskip("playwright.sync_api")
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: run make test (it installs it)"
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        yield context
        context.close()


class PageVisit:
    """Open a URL and record every request and every console error on the way."""

    def __init__(self, context, url):
        self.requests, self.errors, self.failed = [], [], []
        self.page = context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("response", lambda response: response.status >= 400 and self.failed.append(response.url))
        self.response = self.page.goto(url, wait_until="load")

    def foreign_requests(self):
        return [
            url
            for url in self.requests
            if urllib.parse.urlsplit(url).scheme not in ("data", "blob")
            and urllib.parse.urlsplit(url).hostname != "127.0.0.1"
        ]


# axe-core (pinned in package.json) in a page: start axe.run() on the whole document; when it is done,
# window.axeViolations holds each violation's id, help, impact, count and first three targets.
AXE_START = """() => {
    window.axeViolations = null;
    axe.run(document, {resultTypes: ['violations']}).then(
        result => { window.axeViolations = result.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
            targets: v.nodes.slice(0, 3).map(node => node.target.join(' '))})); },
        error => { window.axeViolations = [{id: 'axe-error', help: String(error), count: 1, targets: []}]; });
}"""


def axe_start(page):
    assert AXE_SCRIPT.exists(), "axe-core is missing: run make setup (npm ci)"
    page.add_script_tag(path=str(AXE_SCRIPT))
    page.evaluate(AXE_START)


def axe_result(page):
    page.wait_for_function("window.axeViolations !== null", timeout=180_000, polling=100)
    return page.evaluate("window.axeViolations")


def axe_run(page):
    """axe-core's violations in ``page`` (an empty list when it passes)."""
    axe_start(page)
    return axe_result(page)


def axe_pages(site):
    """The pages axe checks: every HTML page of the site, but one of the per-tag pages (they are alike)."""
    pages, tag_page = [], None
    for name in html_pages(site):
        parts = name.split("/")
        if parts[0] == "categories" and len(parts) == 3 and parts[2] == "index.html":
            if tag_page is not None:
                continue
            tag_page = name
        pages.append(name)
    return pages


def format_violations(violations_by_page):
    lines = []
    for name, violations in violations_by_page.items():
        for violation in violations:
            count = f"{violation.get('impact')}, {violation['count']} elements"
            first = "; ".join(violation["targets"])
            lines.append(f"{name}: {violation['id']} ({count}): {violation['help']}; first: {first}")
    return "\n".join(lines)


def test_every_page_passes_axe(built_site, site_url, browser):
    """axe-core finds no violation on any page: posts, pages, indexes, archive, listings, tags (one tag page)."""
    pages = axe_pages(built_site)
    for required in ("index.html", "archive.html", "categories/index.html", "listings/index.html", POST_PATH):
        assert any(name.startswith(required) for name in pages), required
    assert sum(name.startswith("categories/") for name in pages) == 2
    # Two pages at a time (each in its own renderer process): start axe in the next page while one runs.
    workers = max(2, min(4, os.cpu_count() or 2))
    violations, running, queue = {}, [], list(pages)
    while queue or running:
        while queue and len(running) < workers:
            name = queue.pop(0)
            page = browser.new_page()
            response = page.goto(site_url + name, wait_until="load")
            assert response.status == 200, name
            axe_start(page)
            running.append((name, page))
        name, page = running.pop(0)
        violations[name] = axe_result(page)
        page.close()
    failures = {name: found for name, found in violations.items() if found}
    assert not failures, f"axe violations on {len(failures)} of {len(pages)} pages:\n" + format_violations(failures)


def transferred_bytes(browser, url):
    """What loading ``url`` transfers, by URL: every response body (all images loaded), the browser cache off."""
    from playwright.sync_api import Error as playwright_error

    page = browser.new_page()
    page.route("**/*", lambda route: route.continue_())  # Playwright: routing turns the HTTP cache off
    responses = []
    page.on("response", lambda response: responses.append(response))
    assert page.goto(url, wait_until="load").status == 200, url
    page.evaluate(LOAD_ALL_IMAGES)
    page.wait_for_load_state("networkidle")
    sizes = {}
    for response in responses:
        assert response.status < 400, response.url
        if 300 <= response.status < 400:
            continue  # a redirect has no body
        try:
            size = len(response.body())
        except playwright_error:  # a prefetch (the index prefetches the newest post) may have let its body go
            size = response.request.sizes()["responseBodySize"]
        sizes[response.url] = sizes.get(response.url, 0) + size
    page.close()
    return sizes


def test_every_post_and_page_weighs_under_3_mb(built_site, site_url, browser):
    """Each post and page, its HTML and everything it loads (scripts, CSS, every image), stays under 3 MB."""
    pattern = re.compile(r"(posts|pages)/[^/]+/index.html")
    names = [name for name in html_pages(built_site) if pattern.fullmatch(name)]
    assert sum(name.startswith("posts/") for name in names) >= 5 and "pages/performance/index.html" in names
    weights, report = {}, []
    for name in names + ["index.html"]:
        sizes = transferred_bytes(browser, site_url + name.removesuffix("index.html"))
        assert not [url for url in sizes if "mathjax" in url.lower()], name
        weights[name] = sum(sizes.values())
        largest = sorted(sizes.items(), key=lambda item: -item[1])[:4]
        parts = ", ".join(f"{urllib.parse.urlsplit(url).path} {size:,}" for url, size in largest)
        report.append(f"{weights[name]:>10,} B  {name}  (largest: {parts})")
    print("\n".join(report))
    # The front page is measured, not held to the limit: it prefetches the newest post and shows every
    # post's teaser figures, so its weight follows the newest post's.
    heavy = {name: weights[name] for name in names if weights[name] >= MAX_PAGE_BYTES}
    assert not heavy, f"pages of {MAX_PAGE_BYTES:,} bytes or more:\n" + "\n".join(report)


@pytest.fixture(scope="module")
def post_visit(browser, site_url, tmp_path_factory):
    visit = PageVisit(browser, site_url + POST_PATH)
    page = visit.page
    page.evaluate(LOAD_ALL_IMAGES)
    page.screenshot(path=str(tmp_path_factory.mktemp("screens") / "post.png"), full_page=True)
    return visit


def test_post_is_served(post_visit):
    assert post_visit.response.status == 200
    assert "Beyond the Quickstart" in post_visit.page.title()


def served_document(visit):
    """The served HTML parsed afresh in the page (no script has run on it): typeset or not as it was sent."""
    visit.page.evaluate(
        "html => { window.servedDocument = new DOMParser().parseFromString(html, 'text/html'); }", visit.response.text()
    )
    return "window.servedDocument"


def test_every_formula_is_typeset(post_visit):
    page = post_visit.page
    served = served_document(post_visit)
    assert page.evaluate(f"{served}.querySelectorAll('.math').length") >= 30
    assert page.evaluate(UNTYPESET_MATHS.replace("document", served)) == 0
    assert page.evaluate(f"{served}.querySelectorAll('mjx-merror, [data-mjx-error]').length") == 0
    assert page.evaluate(UNTYPESET_MATHS) == 0 and page.locator(".math svg").first.is_visible()
    assert "\\(" not in page.locator("article").inner_text()


def test_every_image_loads(post_visit):
    images = post_visit.page.evaluate(
        "Array.from(document.images).map(img => [img.currentSrc || img.src, img.naturalWidth])"
    )
    assert len(images) >= 7
    assert [src for src, width in images if width == 0] == []
    sources = " ".join(src for src, _ in images)
    for name in ("reparameterization.svg", "reparameterization_shapes.svg", "vae.svg", "loss_curve.svg",
                 "latent_space.png", "manifold.png", "lead.png"):  # fmt: skip
        assert name in sources, name


def test_no_console_errors_and_no_foreign_requests(post_visit):
    assert post_visit.failed == []
    assert post_visit.errors == []
    assert post_visit.foreign_requests() == []
    assert [url for url in post_visit.requests if "mathjax" in url.lower()] == []
    assert post_visit.page.evaluate("typeof window.MathJax") == "undefined"


def test_every_listing_page_is_reachable_from_the_post(post_visit, browser, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('a[href*=\"listings/\"]')).map(a => a.href)")
    listing_pages = sorted({href for href in hrefs if href.endswith(".py.html")})
    assert {page.rsplit("/", 1)[-1] for page in listing_pages} >= {
        "variational_autoencoder.py.html",
        "variational_autoencoder_classic.py.html",
        "train.py.html",
        "visualize.py.html",
    }
    for href in sorted(set(hrefs)):
        visit = PageVisit(browser, href)
        assert visit.response.status == 200, href
        assert visit.errors == [] and visit.foreign_requests() == [], href
        if href.endswith(".py.html"):
            assert visit.page.locator("pre, table.codetable").count() > 0, href
        visit.page.close()


def test_front_page_shows_teaser_and_lead_figure(browser, site_url):
    visit = PageVisit(browser, site_url)
    assert visit.response.status == 200
    assert visit.page.locator("text=Beyond the Quickstart").count() > 0
    assert visit.page.locator("img[src*='lead']").count() >= 1
    assert visit.errors == [] and visit.foreign_requests() == []


def test_performance_page_shows_the_measured_table_and_chart(browser, site_url):
    visit = PageVisit(browser, site_url + "pages/performance/")
    page = visit.page
    assert visit.response.status == 200
    text = page.locator("article").inner_text()
    assert "{{%" not in text and "SHORTCODE" not in text
    # Compilation, then structure: the classic as written, compiled like ours, and ours, each with a time.
    rows = page.locator("table").filter(has_text="compilation, then structure").locator("tbody tr")
    assert rows.count() == 3
    for index in range(rows.count()):
        float(rows.nth(index).locator("td").all_inner_texts()[1])
    # The targets table: one row per target, each with a number and a verdict.
    rows = page.locator("table").filter(has_text="Measured ratios against the targets").locator("tbody tr")
    assert rows.count() == 11
    for index in range(rows.count()):
        cells = rows.nth(index).locator("td").all_inner_texts()
        float(cells[1])
        assert cells[-1] in {"met", "not met", "within noise"}, cells  # the verdict, on the range over repeats
    for name in ("seconds_per_epoch.svg", "backends.svg"):
        chart = page.locator(f"img[src*='{name}']")
        assert chart.count() == 1 and chart.evaluate("img => img.naturalWidth") > 0, name
    assert page.locator("mjx-container svg").count() >= 3
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []
    # Reachable from every page's navigation bar.
    nav_links = page.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.href)")
    assert site_url + "pages/performance/" in nav_links, nav_links


def test_the_devices_page_shows_its_listing_figure_and_maths_and_is_linked(browser, site_url):
    visit = PageVisit(browser, site_url + "pages/training-on-more-devices/")
    page = visit.page
    assert visit.response.status == 200
    text = page.locator("article").inner_text()
    assert "{{%" not in text and "SHORTCODE" not in text
    assert "keras.distribution.DataParallel" in text and "auto_shard_dataset=False" in text  # the listing
    chart = page.locator("img[src*='scaling.svg']")
    assert chart.count() == 1 and chart.evaluate("img => img.naturalWidth") > 0
    assert page.locator("mjx-container svg").count() >= 5
    assert page.evaluate(UNTYPESET_MATHS) == 0
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []
    start = PageVisit(browser, site_url + "pages/start/")
    links = start.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + "pages/training-on-more-devices/" in links


IWAE_POST_PATH = "posts/inference-in-variational-autoencoders-with-different-monte-carlo-sample-sizes/"


def visit_post(browser, url, title, figures, min_math):
    """Open a post; check its title, that all its maths typeset and every figure in ``figures`` loaded."""
    visit = PageVisit(browser, url)
    page = visit.page
    assert visit.response.status == 200
    assert title in page.title()
    served = served_document(visit)
    assert page.evaluate(f"{served}.querySelectorAll('.math').length") >= min_math
    assert page.evaluate(UNTYPESET_MATHS.replace("document", served)) == 0
    assert page.evaluate(f"{served}.querySelectorAll('mjx-merror, [data-mjx-error]').length") == 0
    assert [url for url in visit.requests if "mathjax" in url.lower()] == []
    text = page.locator("article").inner_text()
    assert "{{%" not in text and "SHORTCODE" not in text
    page.evaluate(LOAD_ALL_IMAGES)
    images = page.evaluate("Array.from(document.images).map(img => [img.currentSrc || img.src, img.naturalWidth])")
    sources = " ".join(src for src, _ in images)
    for name in figures:
        assert name in sources, name
    assert [src for src, width in images if width == 0] == []
    return visit


def test_iwae_post_shows_its_figures_table_and_maths(browser, site_url):
    figures = ("bounds_vs_k.svg", "gradient_variance.svg", "batch_mc_grid.svg", "reconstructions.svg",
               "learning_curves.svg")  # fmt: skip
    visit = visit_post(browser, site_url + IWAE_POST_PATH, "Monte Carlo Sample Sizes", figures, min_math=20)
    page = visit.page
    # The reproduction table (13 epochs) and the rows trained on (13 and 121 epochs): six rows each, ours
    # beside the paper's, all numbers; training on lowered every row's test NLL.
    tables = page.locator("table", has_text="Paper")
    assert tables.count() == 2
    for table, ours_column in ((tables.nth(0), 2), (tables.nth(1), 3)):
        rows = table.locator("tbody tr")
        assert rows.count() == 6
        for index in range(6):
            cells = rows.nth(index).locator("td").all_inner_texts()
            ours, paper = float(cells[ours_column].split("±")[0]), float(cells[ours_column + 1])
            assert 80 < paper < ours < 543, cells
            if ours_column == 3:
                assert ours < float(cells[2]), cells
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []


def test_main_post_links_to_the_iwae_post(post_visit, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + IWAE_POST_PATH in hrefs


AVB_POST_PATH = "posts/adversarial-variational-bayes-swapping-the-kl-layer/"


def test_avb_post_shows_its_figures_tables_and_maths(browser, site_url):
    figures = ("toy_posteriors.svg", "estimator_curves.svg", "avb_model.svg")
    visit = visit_post(browser, site_url + AVB_POST_PATH, "Adversarial Variational Bayes", figures, min_math=20)
    page = visit.page
    # The MNIST table: six models, a test distortion each, an NLL exactly where q has a density.
    table = page.locator("table", has_text="Distortion")
    rows = table.locator("tbody tr")
    assert rows.count() == 6
    for index in range(6):
        cells = rows.nth(index).locator("td").all_inner_texts()
        assert 50 < float(cells[2]) < 543, cells
        assert (cells[-2] == "none") == (cells[0] == "implicit"), cells
    # The toy table: the implicit posterior's log-likelihood is above the Gaussian's, both below -log 4.
    toy = page.locator("table", has_text="four-point").locator("tbody tr")
    log_px = [float(toy.nth(i).locator("td").all_inner_texts()[1]) for i in range(2)]
    assert log_px[0] < log_px[1] < -1.38, log_px
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []


def test_main_post_links_to_the_avb_post(post_visit, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + AVB_POST_PATH in hrefs


FLOWS_POST_PATH = "posts/normalizing-flows-in-keras/"


def test_flows_post_shows_its_figures_tables_and_maths(browser, site_url):
    figures = ("densities.svg", "flow_stack.svg", "flow_vae.svg")
    visit = visit_post(browser, site_url + FLOWS_POST_PATH, "Normalizing Flows", figures, min_math=30)
    page = visit.page
    # The 2-D table: four targets, six flows each, every KL a number >= 0 (to rounding).
    rows = page.locator("table", has_text="IAF, K = 32").locator("tbody tr")
    assert rows.count() == 4
    for index in range(4):
        cells = rows.nth(index).locator("td").all_inner_texts()
        assert cells[0] == f"U{index + 1}" and all(-0.01 < float(cell) < 10 for cell in cells[1:]), cells
    # The MNIST table: three posteriors, an NLL with its standard error each, below the negative ELBO.
    mnist = page.locator("table", has_text="test NLL").locator("tbody tr")
    assert mnist.count() == 3
    for index in range(3):
        cells = mnist.nth(index).locator("td").all_inner_texts()
        nll, negative_elbo = float(cells[1].split("±")[0]), float(cells[2])
        assert 60 < nll < negative_elbo < 543, cells
    assert page.locator("table", has_text="seconds per epoch").count() >= 1
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []


def test_main_post_links_to_the_flows_post(post_visit, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + FLOWS_POST_PATH in hrefs


LIKELIHOODS_POST_PATH = "posts/one-skeleton-many-likelihoods/"


def test_likelihoods_post_shows_its_figures_tables_and_maths(browser, site_url):
    figures = ("mnist_heads.svg", "regression_model.svg", "regression.svg", "reliability.svg")
    url = site_url + LIKELIHOODS_POST_PATH
    visit = visit_post(browser, url, "One Skeleton, Many Likelihoods", figures, min_math=20)
    page = visit.page
    # The MNIST table: five rows; the proper likelihoods' bits per pixel are numbers between 0 and 8.
    rows = page.locator("table", has_text="bits per pixel").locator("tbody tr")
    assert rows.count() == 5
    for index in range(1, 5):
        cells = rows.nth(index).locator("td").all_inner_texts()
        assert 0 < float(cells[3]) < 8, cells
    # The coverage table: percentages for the two interval rows.
    coverage = page.locator("table", has_text="least squares").locator("tbody tr")
    for index in range(2):
        cells = coverage.nth(index).locator("td").all_inner_texts()
        assert all(cell.endswith("%") and 0 < float(cell[:-1]) <= 100 for cell in cells[1:5]), cells
    # The classification table: both accuracies far above chance.
    accuracy = page.locator("table", has_text="calibration error").locator("tbody tr")
    assert accuracy.count() == 3
    for index in range(3):
        assert float(accuracy.nth(index).locator("td").all_inner_texts()[1][:-1]) > 90
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []


def test_main_post_links_to_the_likelihoods_post(post_visit, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + LIKELIHOODS_POST_PATH in hrefs


CONV_POST_PATH = "posts/convolutional-vaes-and-a-second-data-set/"


def test_conv_post_shows_its_figures_tables_and_maths(browser, site_url):
    figures = ("keras_io_loss.svg", "conv_model.svg", "images.svg", "kl_per_dimension.svg", "rate_distortion.svg",
               "active_units.svg")  # fmt: skip
    visit = visit_post(browser, site_url + CONV_POST_PATH, "Convolutional VAEs", figures, min_math=20)
    page = visit.page
    # Dense against convolutional: four rows (two data sets, two networks), an NLL with its standard error,
    # active units at most d.
    rows = page.locator("table", has_text="Dense against convolutional").locator("tbody tr")
    assert rows.count() == 4
    for index in range(4):
        cells = rows.nth(index).locator("td").all_inner_texts()
        nll, stderr = (float(part) for part in cells[2].split("±"))
        active, latent_dim = (int(part) for part in cells[3].split("/"))
        assert 0 < stderr < 50 and 0 <= active <= latent_dim, cells
        if cells[0] == "MNIST":
            assert 60 < nll < 543 and stderr < 5, cells  # a binary image's NLL: below 784 log 2 nats
    # The KL weight tables: five values of beta and four warm-up lengths, each with its active units.
    for caption, count in (("A KL weight throughout training", 5), ("A KL warm-up", 4)):
        table = page.locator("table", has_text=caption).locator("tbody tr")
        assert table.count() == count, caption
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []


def test_main_post_links_to_the_conv_post(post_visit, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + CONV_POST_PATH in hrefs


GRADIENTS_POST_PATH = "posts/lower-variance-gradients-with-one-stop-gradient/"


def test_gradients_post_shows_its_figures_table_and_maths(browser, site_url):
    figures = ("snr.svg", "variance.svg", "training.svg")
    visit = visit_post(browser, site_url + GRADIENTS_POST_PATH, "Lower-Variance Gradients", figures, min_math=20)
    # The training table: the ELBO and the IWAE bound, each an NLL with the total derivative and with the
    # estimator (binary images: below 784 log 2 nats), and a paired difference with its standard error.
    rows = visit.page.locator("table", has_text="Paired difference").locator("tbody tr")
    assert rows.count() == 2
    for index in range(2):
        cells = rows.nth(index).locator("td").all_inner_texts()
        totals = [float(cell.split("(")[0]) for cell in cells[1:3]]
        difference, stderr = (float(part) for part in cells[3].split("±"))
        assert all(60 < nll < 543 for nll in totals) and 0 < stderr < 5, cells
        assert difference == pytest.approx(totals[0] - totals[1], abs=0.02), cells  # NLLs: total minus estimator
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []


def test_main_post_links_to_the_gradients_post(post_visit, site_url):
    hrefs = post_visit.page.evaluate("Array.from(document.querySelectorAll('article a')).map(a => a.href)")
    assert site_url + GRADIENTS_POST_PATH in hrefs


def listing_fragments(post):
    """The code of every ``.. listing::`` in a post's source, in order: the file's text between its
    ``:start-after:`` and ``:end-before:`` markers (docutils' include semantics), or all of it."""
    fragments, lines = [], (REPO_ROOT / "posts" / f"{post}.rst").read_text().splitlines()
    for index, line in enumerate(lines):
        if not line.startswith(".. listing:: "):
            continue
        text = (REPO_ROOT / line.split()[2]).read_text()
        options = {}
        for option in lines[index + 1 :]:
            match = re.fullmatch(r"\s+:([a-z-]+):\s*(.*)", option)
            if not match:
                break
            options[match[1]] = match[2]
        if "start-after" in options:
            text = text[text.index(options["start-after"]) + len(options["start-after"]) :]
        if "end-before" in options:
            text = text[: text.index(options["end-before"])]
        fragments.append(text)
    return fragments


def test_every_listing_block_copies_its_code_and_links_its_file(post_visit, browser, site_url):
    """Each listing block of the main post has a Copy button that puts exactly the listing's code (its
    marked part of the file) on the clipboard, and a link to the whole file above it; no network needed."""
    page = post_visit.page
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=site_url.rstrip("/"))
    fragments = listing_fragments(POST_SLUG)
    blocks = page.locator("article div.code")
    assert blocks.count() == len(fragments) >= 10
    for index, fragment in enumerate(fragments):
        block = blocks.nth(index)
        link = block.locator("xpath=preceding-sibling::p[1]//a[contains(@href, 'listings/')]").first
        assert link.get_attribute("href").endswith(".py.html"), index
        button = block.locator("button.copy-code")
        assert button.count() == 1 and button.get_attribute("aria-label") == "Copy this code"
        button.click()
        page.wait_for_function("b => b.textContent === 'Copied'", arg=button.element_handle(), timeout=5_000)
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied.strip("\n") == fragment.strip("\n"), (index, copied[:200], fragment[:200])
    assert page.locator("[role=status]").inner_text() == "Code copied to the clipboard."
    assert post_visit.errors == [] and post_visit.foreign_requests() == []


def test_a_listing_page_copies_the_whole_file_without_line_numbers(browser, site_url):
    visit = PageVisit(browser, site_url + "listings/vae/train.py.html")
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=site_url.rstrip("/"))
    visit.page.locator("button.copy-code").click()
    visit.page.wait_for_function("document.querySelector('button.copy-code').textContent === 'Copied'")
    copied = visit.page.evaluate("navigator.clipboard.readText()")
    assert copied == (LISTINGS_DIR / "train.py").read_text().rstrip("\n")
    assert visit.errors == [] and visit.foreign_requests() == []
    visit.page.close()


EXPLORER_POINTS = [(0.0, 0.0), (1.3, -0.7), (-2.5, 2.2)]


@pytest.fixture(scope="module")
def keras_vae():
    """The committed model of the main post, loaded by Keras: ``(encoder, decoder)``."""
    from visualize import load_vae

    _, encoder, decoder = load_vae(REPO_ROOT / "results" / "vae" / "vae.keras")
    return encoder, decoder


def test_the_latent_explorer_runs_the_committed_decoder(browser, site_url, keras_vae):
    """The explorer loads its files only when opened, from this site; its decoded Bernoulli means equal the
    Keras decoder's at three points (1e-4); the sliders, a drag and the walk move the point and change the
    image; the walk starts and ends at Keras' posterior means of the two test images; axe passes."""
    import numpy as np
    from mnist_data import flatten_and_scale, load_mnist
    from scipy.special import expit

    encoder, decoder = keras_vae
    visit = PageVisit(browser, site_url + POST_PATH)
    page = visit.page
    assert not [url for url in visit.requests if "/explorer/" in url]  # the first load stays light
    page.locator("#latent-explorer button").click()
    page.wait_for_function("window.latentExplorer.loaded", timeout=30_000)
    assert {url.rsplit("/", 1)[-1] for url in visit.requests if "/explorer/" in url} == {
        "explorer.json", "decoder.bin", "codes.bin", "labels.bin"}  # fmt: skip

    z = np.array(EXPLORER_POINTS, dtype="float32")
    expected = expit(decoder.predict(z.reshape(-1, 1, 2), verbose=0)).reshape(len(z), -1)
    for point, means in zip(EXPLORER_POINTS, expected, strict=True):
        decoded = np.array(page.evaluate("([a, b]) => Array.from(window.latentExplorer.setPoint(a, b))", point))
        assert decoded.shape == (784,) and np.abs(decoded - means).max() < 1e-4, point

    def state():
        return page.evaluate("[window.latentExplorer.point, Array.from(window.latentExplorer.output)]")

    before, image = state()
    page.locator("#explorer-z1").focus()
    page.keyboard.press("ArrowRight")  # keyboard operable: a native slider, step 0.01
    after, new_image = state()
    assert after[0] == pytest.approx(before[0] + 0.01, abs=1e-9) and after[1] == before[1] and new_image != image
    assert page.locator(".explorer-description").inner_text().startswith(f"z = ({after[0]:.2f}, {after[1]:.2f}).")
    label = page.locator("canvas.explorer-image").get_attribute("aria-label")  # the image's text alternative
    assert label == f"The decoded image at z = ({after[0]:.2f}, {after[1]:.2f})"

    box = page.locator("canvas.explorer-plane").bounding_box()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"], steps=5)
    page.mouse.up()
    dragged, dragged_image = state()
    low, high = page.evaluate("fetch('../../explorer/explorer.json').then(r => r.json()).then(m => m.extent)")
    quarter = (high - low) / 4
    assert dragged == pytest.approx([0.5 * (low + high) + quarter, 0.5 * (low + high) + quarter], abs=0.05)
    assert dragged_image != new_image

    _, (x_test, _) = load_mnist(MNIST_SUBSET_DIR)  # the walk's images are among its first 200
    page.locator("#explorer-mode-walk").check()
    first, second = (int(page.locator(f"#explorer-{name}").input_value()) for name in ("from", "to"))
    z_mean, _ = encoder.predict(flatten_and_scale(x_test[[first, second]]), verbose=0)
    for t, code in (("0", z_mean[0]), ("1", z_mean[1])):
        page.locator("#explorer-t").fill(t)
        assert np.abs(np.array(page.evaluate("window.latentExplorer.point")) - code).max() < 1e-4, t
    page.locator("#explorer-t").fill("0.5")
    assert np.abs(np.array(page.evaluate("window.latentExplorer.point")) - z_mean.mean(axis=0)).max() < 1e-4

    assert axe_run(page) == []
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []
    page.close()


def test_every_post_links_its_notebook(built_site, site_url, browser):
    """Under its header every post links its notebook, served by the site: a valid nbformat 4 notebook whose
    first cell is the post's title."""
    import json

    import nbformat

    posts = [name for name in html_pages(built_site) if re.fullmatch(r"posts/[^/]+/index.html", name)]
    assert len(posts) == len(list((REPO_ROOT / "posts").glob("*.rst")))
    for name in posts:
        visit = PageVisit(browser, site_url + name.removesuffix("index.html"))
        link = visit.page.locator("p.notebook-link a")
        assert link.inner_text() == "Download this post as a notebook", name
        response = visit.page.request.get(link.evaluate("a => a.href"))
        assert response.status == 200, name
        book = nbformat.reads(json.dumps(response.json()), as_version=4)
        nbformat.validate(book)
        title = visit.page.locator("article h1").first.inner_text().strip()
        assert "".join(book.cells[0].source).startswith(f"# {title}"), name
        visit.page.close()
