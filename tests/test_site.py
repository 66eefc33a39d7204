"""The built site: Nikola's own checks, strict builds, and the pages in a real headless Chromium."""

import os
import re
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import POST_SLUG, REPO_ROOT, VENV_BIN

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


def test_built_pages_load_nothing_from_other_hosts(built_site):
    html = (built_site / POST_PATH / "index.html").read_text()
    assert "assets/mathjax/tex-svg.js" in html
    for page in built_site.rglob("*.html"):
        text = page.read_text()
        resources = re.findall(
            r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=\"((?:https?:)?//[^\"]+)\"", text
        )
        hosts = {urllib.parse.urlsplit(url).hostname for url in resources}
        assert hosts <= {"127.0.0.1"}, (page, hosts)
        assert "disqus" not in text and "googletagmanager" not in text, page


def test_rest_error_fails_the_strict_build(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for name in ("conf.py", "posts", "pages", "listings", "images", "templates", "plugins", "results", "files"):
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, site / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, site / name)
    broken = site / "posts" / "broken.rst"
    broken.write_text(".. title: Broken\n.. slug: broken\n.. date: 2026-01-01 00:00:00 UTC\n\nA `broken link_ here.\n")
    result = nikola("build", "--strict", cwd=site)
    assert result.returncode != 0
    assert "broken" in (result.stdout + result.stderr).lower()


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


@pytest.fixture(scope="module")
def post_visit(browser, site_url, tmp_path_factory):
    visit = PageVisit(browser, site_url + POST_PATH)
    page = visit.page
    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("MathJax.startup.promise")
    page.evaluate(
        """() => Promise.all(Array.from(document.images).map(img => {
            img.loading = 'eager';
            return img.complete ? null : new Promise(resolve => { img.onload = img.onerror = resolve; });
        }))"""
    )
    page.screenshot(path=str(tmp_path_factory.mktemp("screens") / "post.png"), full_page=True)
    return visit


def test_post_is_served(post_visit):
    assert post_visit.response.status == 200
    assert "Beyond the Quickstart" in post_visit.page.title()


def test_every_formula_is_typeset(post_visit):
    page = post_visit.page
    total = page.locator(".math").count()
    assert total >= 30
    untypeset = page.evaluate(
        "Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container svg')).length"
    )
    assert untypeset == 0
    assert page.locator("mjx-merror, [data-mjx-error]").count() == 0
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
    assert any("assets/mathjax/" in url for url in post_visit.requests)


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
    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("MathJax.startup.promise")
    text = page.locator("article").inner_text()
    assert "{{%" not in text and "SHORTCODE" not in text
    # The targets table: one row per target, each with a number and a verdict.
    rows = page.locator("table").first.locator("tbody tr")
    assert rows.count() == 8
    for index in range(rows.count()):
        cells = rows.nth(index).locator("td").all_inner_texts()
        float(cells[1])
        assert cells[3] in {"met", "not met"}, cells
    chart = page.locator("img[src*='seconds_per_epoch.svg']")
    assert chart.count() == 1 and chart.evaluate("img => img.naturalWidth") > 0
    assert page.locator("mjx-container svg").count() >= 3
    assert visit.errors == [] and visit.failed == [] and visit.foreign_requests() == []
    # Reachable from every page's navigation bar.
    nav_links = page.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.href)")
    assert site_url + "pages/performance/" in nav_links, nav_links


IWAE_POST_PATH = "posts/inference-in-variational-autoencoders-with-different-monte-carlo-sample-sizes/"


def visit_post(browser, url, title, figures, min_math):
    """Open a post; check its title, that all its maths typeset and every figure in ``figures`` loaded."""
    visit = PageVisit(browser, url)
    page = visit.page
    assert visit.response.status == 200
    assert title in page.title()
    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("MathJax.startup.promise")
    untypeset = page.evaluate(
        "Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container svg')).length"
    )
    assert page.locator(".math").count() >= min_math and untypeset == 0
    assert page.locator("mjx-merror, [data-mjx-error]").count() == 0
    text = page.locator("article").inner_text()
    assert "{{%" not in text and "SHORTCODE" not in text
    page.evaluate(
        """() => Promise.all(Array.from(document.images).map(img => {
            img.loading = 'eager';
            return img.complete ? null : new Promise(resolve => { img.onload = img.onerror = resolve; });
        }))"""
    )
    images = page.evaluate("Array.from(document.images).map(img => [img.currentSrc || img.src, img.naturalWidth])")
    sources = " ".join(src for src, _ in images)
    for name in figures:
        assert name in sources, name
    assert [src for src, width in images if width == 0] == []
    return visit


def test_iwae_post_shows_its_figures_table_and_maths(browser, site_url):
    figures = ("bounds_vs_k.svg", "gradient_variance.svg", "batch_mc_grid.svg", "reconstructions.svg")
    visit = visit_post(browser, site_url + IWAE_POST_PATH, "Monte Carlo Sample Sizes", figures, min_math=20)
    page = visit.page
    # The reproduction table: six rows, ours beside the paper's, both numbers.
    table = page.locator("table", has_text="Paper")
    rows = table.locator("tbody tr")
    assert rows.count() == 6
    for index in range(6):
        cells = rows.nth(index).locator("td").all_inner_texts()
        ours, paper = float(cells[2].split("±")[0]), float(cells[3])
        assert 80 < paper < ours < 543, cells
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
