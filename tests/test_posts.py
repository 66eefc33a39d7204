"""Posts hold no hand-written code and no typed numbers; every listing excerpt resolves."""

import json
import re

import pytest

from conftest import REPO_ROOT

# Posts and pages: the same rules hold for both.
POSTS = sorted((REPO_ROOT / "posts").glob("*.rst")) + sorted((REPO_ROOT / "pages").glob("*.rst"))
CODE_DIRECTIVES = re.compile(r"^\s*\.\.\s+(code|code-block|sourcecode|raw|include|literalinclude)::", re.M)
LISTING = re.compile(r"^\.\. listing:: (\S+) (\w+)\n((?:[ \t]+:[\w-]+:.*\n)*)", re.M)
SHORTCODE = re.compile(r"\{\{%\s*result\s+(\S+)(?:\s+file=(\S+))?(?:\s+minus=(\S+))?(?:\s+format=(\S+))?\s*%\}\}")


def listing_directives(text):
    for match in LISTING.finditer(text):
        options = dict(re.findall(r":([\w-]+):[ \t]*(.*)", match.group(3)))
        yield match.group(1), options


def test_there_is_a_post():
    assert any(post.stem.startswith("implementing-variational-autoencoders") for post in POSTS)


@pytest.mark.parametrize("post", POSTS, ids=[p.stem[:40] for p in POSTS])
def test_listing_markers_exist_once_and_in_order(post):
    text = post.read_text()
    directives = list(listing_directives(text))
    assert directives or post.parent.name == "pages", "a post with no listings"
    assert len(directives) == text.count(".. listing::"), "a listing directive the test could not parse"
    for path, options in directives:
        # Two listing folders (listings/ and scripts/), so a directive names its folder.
        assert path.startswith("listings/vae/"), f"{post.name}: listing {path} is not under listings/vae/"
        source_path = REPO_ROOT / path
        assert source_path.is_file(), f"{post.name}: listing {path} does not exist"
        source = source_path.read_text()
        positions = []
        for option in ("start-after", "end-before"):
            if option in options:
                marker = options[option]
                assert source.count(marker) == 1, (
                    f"{post.name}: marker {marker!r} found {source.count(marker)} times in {path}"
                )
                positions.append(source.index(marker))
        assert positions == sorted(positions), f"{post.name}: markers out of order in {path}: {options}"
        assert set(options) <= {"start-after", "end-before", "linenos"}, options


@pytest.mark.parametrize("post", POSTS, ids=[p.stem[:40] for p in POSTS])
def test_no_code_block_that_is_not_a_listing(post):
    text = post.read_text()
    assert not CODE_DIRECTIVES.search(text), CODE_DIRECTIVES.search(text).group(0)
    # A paragraph ending in "::" opens a literal block: hand-written code.
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.endswith("::") and not stripped.startswith(".."):
            pytest.fail(f"{post.name}:{number}: literal block {stripped!r}")


def prose(text):
    """The post without metadata, maths, directives' options, shortcodes and references."""
    text = re.sub(r"^\.\. \[#\w+\].*\n(?:[ \t]+.*\n)*", "", text, flags=re.M)  # citations: years, pages
    text = re.sub(r"^\.\. \w+:.*$", "", text, flags=re.M)  # metadata
    text = re.sub(r"^\.\. math::\n(?:\n|[ \t]+.*\n)*", "", text, flags=re.M)
    text = re.sub(r":math:`[^`]*`", "", text)
    text = re.sub(r"``[^`]*``", "", text)
    text = re.sub(r"<(?:https?://|/)[^>]*>`", "`", text)  # link targets: URLs and site paths
    text = re.sub(r"^[ \t]+:[\w-]+:.*$", "", text, flags=re.M)
    return SHORTCODE.sub("", text)


@pytest.mark.parametrize("post", POSTS, ids=[p.stem[:40] for p in POSTS])
def test_no_typed_results(post):
    text = prose(post.read_text())
    decimals = re.findall(r"(?<![\w.])\d+(?:\.\d+)+", text)
    assert not [d for d in decimals if d not in {"2.0.8"}], f"typed decimal numbers: {decimals}"
    typed_units = re.findall(r"\d[\d,.]*\s*(?:nats|s per epoch|seconds|epochs)\b", text)
    assert not typed_units, f"numbers with units typed into the post: {typed_units}"


@pytest.mark.parametrize("post", POSTS, ids=[p.stem[:40] for p in POSTS])
def test_every_result_shortcode_resolves(post):
    import sys

    sys.path.insert(0, str(REPO_ROOT / "plugins" / "results"))
    from results import DEFAULT_RECORD, lookup

    text = post.read_text()
    default = re.search(r"^\.\. results: (\S+)$", text, re.M)
    shortcodes = SHORTCODE.findall(text)
    assert shortcodes or post.parent.name == "pages", "a post with no recorded numbers"
    for key, file, minus, fmt in shortcodes:
        path = REPO_ROOT / (file or (default.group(1) if default else DEFAULT_RECORD))
        record = json.loads(path.read_text())
        value = lookup(record, key, path)
        if minus:
            value = value - lookup(record, minus, path)
        if fmt:
            format(value, fmt)
