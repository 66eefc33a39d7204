"""The notebook of every post: generated from the post, current, without outputs, and running from top to
bottom (in a quick mode, on the committed MNIST subset)."""

import json
import os
import re
import time

import pytest

import make_notebooks
from conftest import MNIST_SUBSET_DIR, REPO_ROOT, run_python

NOTEBOOKS = REPO_ROOT / "files" / "notebooks"
POSTS = sorted(path.stem for path in (REPO_ROOT / "posts").glob("*.rst"))


def read(slug):
    return json.loads((NOTEBOOKS / f"{slug}.ipynb").read_text())


def test_the_committed_notebooks_are_what_the_posts_make_today():
    result = run_python(["scripts/make_notebooks.py", "--check"])
    assert result.returncode == 0, result.stderr.strip()[-500:]
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == POSTS


def test_a_notebook_edited_by_hand_is_reported(tmp_path):
    """--check compares the bytes: one notebook edited by hand (here, a cell dropped) is reported by name."""
    for path in NOTEBOOKS.glob("*.ipynb"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    book = read(POSTS[0])
    del book["cells"][3]
    (tmp_path / f"{POSTS[0]}.ipynb").write_text(json.dumps(book))
    result = run_python(["scripts/make_notebooks.py", "--check", "--output-dir", tmp_path])
    assert result.returncode == 1 and f"{POSTS[0]}.ipynb differs from its post" in result.stderr


@pytest.mark.parametrize("slug", POSTS)
def test_a_notebook_holds_the_posts_prose_code_and_listings_without_outputs(slug):
    book = read(slug)
    post = (REPO_ROOT / "posts" / f"{slug}.rst").read_text()
    cells = book["cells"]
    markdown = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in cells
               if cell["cell_type"] == "code")  # fmt: skip
    assert markdown.startswith(f"# {make_notebooks.metadata(post)['title']}")
    assert 'os.environ.get("NOTEBOOK_QUICK") == "1"' in code[0]
    # Every block the post quotes, where it quotes it, as the listing file has it today.
    quoted = re.findall(r"From `(listings/vae/[a-z_]+\.py)`:\n\n```python\n(.*?)\n```", markdown, flags=re.DOTALL)
    assert len(quoted) == post.count("\n.. listing:: ")
    for path, text in quoted:
        assert text in (REPO_ROOT / path).read_text(), path
    # Every section of the post, and no shortcode, reST role or directive left unconverted in the prose.
    prose = re.sub(r"```python\n.*?\n```", "", markdown, flags=re.DOTALL)
    assert len(re.findall(r"^## ", prose, flags=re.MULTILINE)) == len(re.findall(r"\n[^\n]+\n-{3,}\n", post)) + 1
    assert "{{%" not in prose and ":math:" not in prose and "\n.. " not in prose and "``" not in prose
    # Each listing quoted or run is written whole, after the listings it imports at module level.
    written = [cell.split("\n", 1) for cell in code if cell.startswith("%%writefile ")]
    names = [first.removeprefix("%%writefile ").removesuffix(".py") for first, _ in written]
    for (_, source), name in zip(written, names, strict=True):
        assert source == (REPO_ROOT / "listings" / "vae" / f"{name}.py").read_text()
        for imported in re.findall(r"^(?:from|import) ([a-z_]+)", source, flags=re.MULTILINE):  # module level
            if (REPO_ROOT / "listings" / "vae" / f"{imported}.py").is_file():
                assert names.index(imported) < names.index(name), (imported, name)
    assert {make_notebooks.pathlib.Path(path).stem for path in re.findall(r"^\.\. listing:: (\S+)", post,
                                                                          flags=re.MULTILINE)} <= set(names)  # fmt: skip
    assert [cell.split("\n")[0] for cell in code[-len(make_notebooks.RUNS[slug]) :]] == [
        f"import {name}" for name, *_ in make_notebooks.RUNS[slug]
    ]


def test_the_conversion_of_a_small_post(tmp_path):
    """reST to Markdown on a post written for the test: headings, inline maths and code, a maths block, a
    list-table, a listing's marked part, a footnote, a figure's caption, a nested list; comments left out."""
    listing = tmp_path / "demo.py"
    listing.write_text("import math\n# [start f]\ndef f(x):\n    return math.exp(x)\n# [end f]\n")
    text = f""".. title: Demo
.. slug: demo

A number :math:`x^2` and ``two
words`` [#ref]_.

.. TEASER_END

First part
----------

.. math::

   \\log p(x) \\ge \\mathcal{{L}}

.. listing:: {listing} python
   :start-after: # [start f]
   :end-before: # [end f]

.. list-table:: The title.
   :header-rows: 1

   * - a
     - b
   * - 1
     - 2

.. figure:: /images/x.svg
   :alt: x

   The caption.

- a

  - b, with two lines
    of text

- c

.. [#ref] A reference.
"""
    parts = []
    make_notebooks.blocks(make_notebooks.doctree(text), 1, parts)
    assert parts == [
        ("markdown", "A number $x^2$ and `two words` [1]."),  # a literal broken across lines, on one
        ("heading", "## First part"),
        ("markdown", "$$\n\\log p(x) \\ge \\mathcal{L}\n$$"),
        ("markdown", f"From `{listing}`:\n\n```python\ndef f(x):\n    return math.exp(x)\n```"),
        ("markdown", "*Table: The title.*\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"),
        ("markdown", "*Figure (on the post's page): The caption.*"),
        ("markdown", "- a\n\n  - b, with two lines of text\n- c"),
        ("markdown", "[1] A reference."),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("term\n   its definition\n", "cannot convert a definition_list"),
        (".. raw:: html\n\n   <div>a page's own HTML</div>\n", "cannot convert a raw"),
        (".. youtube:: abc\n", 'Unknown directive type "youtube"'),
        ("Intro.\n\n.. listing:: listings/vae/objectives.py python\n   :start-after: # [start nowhere]\n",
         "has no '# \\[start nowhere\\]': expected the :start-after: marker"),
    ],
    ids=["definition-list", "raw-html", "unknown-directive", "missing-marker"],
)
def test_what_the_converter_cannot_convert_is_refused_in_one_line(text, message):
    with pytest.raises(ValueError, match=message):
        make_notebooks.blocks(make_notebooks.doctree(text), 1, [])


def test_a_shortcode_it_does_not_know_is_refused():
    with pytest.raises(ValueError, match="knows no shortcode 'youtube'"):
        make_notebooks.fill_results("A {{% youtube abc %}} here.", "results/vae/main_post.json")
    assert "{{%" not in make_notebooks.fill_results("{{% latent_explorer %}}", "results/vae/main_post.json")


@pytest.mark.slow
@pytest.mark.parametrize("slug", POSTS)
def test_every_notebook_runs_from_top_to_bottom(slug, tmp_path, monkeypatch):
    """nbclient executes the notebook in a fresh kernel, NOTEBOOK_QUICK=1, on the committed MNIST subset: every
    cell runs without an error (each run cell asserts its program's exit status 0) and the programs write
    their outputs beside the notebook."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MNIST_DIR", str(MNIST_SUBSET_DIR))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    book = nbformat.read(NOTEBOOKS / f"{slug}.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"{slug}.ipynb ran in {time.perf_counter() - start:.1f} s")
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    assert not [output for cell in code for output in cell.outputs if output.output_type == "error"]
    for name, arguments, _ in make_notebooks.RUNS[slug]:
        assert (tmp_path / f"{name}.py").is_file()
        if "--output-dir" in arguments:
            folder = tmp_path / arguments[arguments.index("--output-dir") + 1]
            assert any(folder.iterdir()), folder
    assert os.environ["NOTEBOOK_QUICK"] == "1"
