"""Assemble every post into a Jupyter notebook: its prose, its code, and the listings to run.

Each ``posts/<slug>.rst`` becomes ``files/notebooks/<slug>.ipynb`` (served as
``/notebooks/<slug>.ipynb`` and linked from the post). The prose is the
post's, converted from reStructuredText to Markdown with its maths and with
every recorded number filled in as the site shows it; every code block the
post quotes appears where the post quotes it. At the end, one cell per
listing writes it next to the notebook (``%%writefile``, the listings the
post quotes and those they import) and the last cells run the post's
programs. A first cell reads ``NOTEBOOK_QUICK``: set to 1, the runs shrink
to seconds (the site's tests execute every notebook that way).

The notebooks are generated, never edited: ``--check`` exits 1 when a
committed notebook differs from what the posts and listings make today.
They carry no outputs.
"""

import argparse
import ast
import json
import pathlib
import re
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

POSTS_DIR = REPO_ROOT / "posts"
LISTINGS_DIR = REPO_ROOT / "listings" / "vae"
OUTPUT_DIR = REPO_ROOT / "files" / "notebooks"
SHORTCODE = re.compile(r"\{\{%\s*result\s+(.*?)\s*%\}\}")
# The site's other shortcodes, and what a notebook says in their place.
OTHER_SHORTCODES = {
    "latent_explorer": "*On the post's page, the latent explorer opens here: the trained decoder, run in the browser.*",
}
ANY_SHORTCODE = re.compile(r"\{\{%\s*(\w+).*?%\}\}")
QUICK_CELL = """\
# NOTEBOOK_QUICK=1 shrinks the runs at the end to seconds (the site's tests run every notebook that way);
# unset, they use the settings the post reports.
import os

QUICK = os.environ.get("NOTEBOOK_QUICK") == "1\""""
# Per post, the programs its last cells run: (listing, arguments, arguments in a quick run). Outputs go to
# folders beside the notebook.
RUNS = {
    "implementing-variational-autoencoders-in-keras-beyond-the-quickstart-tutorial": [
        ("train", ["--output-dir", "vae_output"], ["--output-dir", "vae_output", "--num-epochs", "1", "--quiet"]),
        ("visualize", ["--model", "vae_output/vae.keras", "--output-dir", "vae_output"], None),
    ],
    "inference-in-variational-autoencoders-with-different-monte-carlo-sample-sizes": [
        ("importance_weighted", ["--objective", "iwae", "-k", "5", "--output-dir", "iwae_output"],
         ["--objective", "iwae", "-k", "5", "--stages", "1", "--batch-size", "100", "--output-dir", "iwae_output",
          "--quiet"]),
        ("log_likelihood", ["--model", "iwae_output/vae.keras", "--num-samples", "5000", "--num-examples", "1000"],
         ["--model", "iwae_output/vae.keras", "--num-samples", "20", "--num-examples", "10", "--quiet"]),
    ],
    "adversarial-variational-bayes-swapping-the-kl-layer": [
        ("avb", ["--divergence", "adversarial", "--posterior", "implicit", "--output-dir", "avb_output"],
         ["--divergence", "adversarial", "--posterior", "implicit", "--epochs", "1", "--output-dir", "avb_output",
          "--quiet"]),
    ],
    "normalizing-flows-in-keras": [
        ("flow_densities", ["--target", "U2", "--num-flows", "8"],
         ["--target", "U2", "--num-flows", "2", "--steps", "200", "--quiet"]),
        ("flows", ["--flow", "iaf", "--num-flows", "2", "--output-dir", "flows_output"],
         ["--flow", "iaf", "--num-flows", "2", "--epochs", "1", "--num-test", "20", "--num-samples", "20",
          "--output-dir", "flows_output", "--quiet"]),
    ],
    "one-skeleton-many-likelihoods": [
        ("skeleton", ["--task", "digits"], ["--task", "digits", "--epochs", "3", "--samples", "50"]),
        ("skeleton", ["--task", "diabetes"], ["--task", "diabetes", "--epochs", "3", "--samples", "50"]),
    ],
    "parts-that-combine": [
        ("compose", ["--posterior", "iaf", "--likelihood", "continuous_bernoulli", "--objective", "iwae"], None),
        ("training", ["--objective", "iwae", "--mc-samples", "5"],
         ["--objective", "iwae", "--mc-samples", "5", "--epochs", "1"]),
    ],
    "convolutional-vaes-and-a-second-data-set": [
        ("keras_io_conv_vae", ["--split", "train"], ["--split", "train", "--epochs", "1"]),
        ("compose", ["--encoder", "conv", "--decoder", "conv", "--latent-dim", "16", "--kl-weight", "0.5"], None),
    ],
    "lower-variance-gradients-with-one-stop-gradient": [
        ("gradients", [], ["--draws", "20"]),
        ("training", ["--objective", "iwae", "--mc-samples", "5", "--gradient", "dreg"],
         ["--objective", "iwae", "--mc-samples", "5", "--gradient", "dreg", "--epochs", "1"]),
    ],
}  # fmt: skip


# ---- reStructuredText to Markdown -----------------------------------------------------------------------


def metadata(text, name="the post"):
    """The post's Nikola metadata (``.. title: ...`` lines at the top); a ValueError without a title or slug."""
    meta = dict(re.findall(r"^\.\. (\w+): ?(.*)$", text.split("\n\n", 1)[0], flags=re.MULTILINE))
    missing = [key for key in ("title", "slug") if not meta.get(key)]
    if missing:
        raise ValueError(f"{name} has no {' or '.join(missing)}: expected Nikola's `.. title: ...` and `.. slug: ...` "
                         "lines at the top")  # fmt: skip
    return meta


def fill_results(text, default_record):
    """Every ``{{% result ... %}}`` replaced by the number the site shows (the results plugin's lookup)."""
    sys.path.insert(0, str(REPO_ROOT / "plugins" / "results"))
    from results import lookup, render

    def replace(match):
        key, *options = match[1].split()
        options = dict(option.split("=", 1) for option in options)
        path = options.get("file", default_record)
        record = json.loads((REPO_ROOT / path).read_text())
        value = lookup(record, key, path)
        if "minus" in options:
            value = value - lookup(record, options["minus"], path)
        return render(value, options.get("format"))

    def other(match):
        if match[1] not in OTHER_SHORTCODES:
            raise ValueError(f"make_notebooks.py knows no shortcode {match[1]!r}. Expected result or one of "
                             f"{', '.join(OTHER_SHORTCODES)}")  # fmt: skip
        return OTHER_SHORTCODES[match[1]]

    return ANY_SHORTCODE.sub(other, SHORTCODE.sub(replace, text))


def listing_text(path, options):
    """What ``.. listing::`` shows: the file, or its part between ``:start-after:`` and ``:end-before:``."""
    text = (REPO_ROOT / path).read_text()
    for option in ("start-after", "end-before"):
        if option in options and options[option] not in text:
            raise ValueError(f"{path} has no {options[option]!r}: expected the :{option}: marker of a listing")
    if "start-after" in options:
        text = text[text.index(options["start-after"]) + len(options["start-after"]) :]
    if "end-before" in options:
        text = text[: text.index(options["end-before"])]
    return text.strip("\n")


def doctree(text):
    """The post parsed by docutils, with Nikola's ``listing`` directive as a literal block naming its file."""
    from docutils import nodes
    from docutils.core import publish_doctree
    from docutils.parsers.rst import Directive, directives

    class Listing(Directive):
        required_arguments, optional_arguments = 1, 1
        option_spec = {"start-after": directives.unchanged, "end-before": directives.unchanged}

        def run(self):
            block = nodes.literal_block(text=listing_text(self.arguments[0], self.options))
            block["source_file"] = self.arguments[0]
            return [block]

    directives.register_directive("listing", Listing)
    # Problems are reported, not dropped: a system message of level 2 (a warning) or more becomes an error
    # (`blocks`), and a first section stays a section (no document title is lifted out of it).
    settings = {"report_level": 5, "halt_level": 5, "warning_stream": False, "doctitle_xform": False}
    return publish_doctree(text, settings_overrides=settings)


def inline(node):
    """Markdown of a node's inline content."""
    from docutils import nodes

    if isinstance(node, nodes.Text):
        return str(node).replace("\n", " ")
    content = "".join(inline(child) for child in node.children)
    if isinstance(node, nodes.emphasis | nodes.title_reference):
        return f"*{content}*"
    if isinstance(node, nodes.strong):
        return f"**{content}**"
    if isinstance(node, nodes.literal):  # on one line: the reST source may break it
        return f"`{' '.join(node.astext().split())}`"
    if isinstance(node, nodes.math):
        return f"${' '.join(node.astext().split())}$"
    if isinstance(node, nodes.footnote_reference):
        return f"[{node.astext()}]"
    if isinstance(node, nodes.reference):
        uri = node.get("refuri", "")
        return f"[{content}]({uri})" if uri.startswith(("http://", "https://")) else content
    if isinstance(node, nodes.target | nodes.system_message | nodes.problematic | nodes.comment):
        return "" if not isinstance(node, nodes.problematic) else node.astext()
    return content


def table(node):
    """A Markdown table of a docutils table (a list-table), its title as a caption above."""
    from docutils import nodes

    rows = []
    for row in node.findall(nodes.row):
        cells = [" ".join(inline(part) for part in entry.children).replace("|", "\\|") for entry in row.children]
        rows.append("| " + " | ".join(cells) + " |")
    rows.insert(1, "|" + " --- |" * (rows[0].count(" | ") + 1))
    titles = [inline(title) for title in node.children if isinstance(title, nodes.title)]
    return (f"*Table: {titles[0]}*\n\n" if titles else "") + "\n".join(rows)


def blocks(node, level, out):
    """Append ``(kind, text)`` for every block under ``node``: kind is "markdown" or "code"."""
    from docutils import nodes

    for child in node.children:
        if isinstance(child, nodes.section):
            title = inline(child[0])
            out.append(("heading", "#" * (level + 1) + " " + title))
            blocks(child, level + 1, out)
        elif isinstance(child, nodes.title):
            continue
        elif isinstance(child, nodes.paragraph):
            out.append(("markdown", inline(child)))
        elif isinstance(child, nodes.literal_block):
            source = child.get("source_file")
            note = f"From `{source}`:\n\n" if source else ""
            out.append(("markdown", f"{note}```python\n{child.astext()}\n```"))
        elif isinstance(child, nodes.math_block):
            out.append(("markdown", f"$$\n{child.astext().strip()}\n$$"))
        elif isinstance(child, nodes.bullet_list | nodes.enumerated_list):
            marker = "-" if isinstance(child, nodes.bullet_list) else "1."
            indent = " " * (len(marker) + 1)
            items = []
            for item in child.children:  # every line of an item's blocks indented under its marker
                parts = []
                blocks(item, level, parts)
                lines = "\n\n".join(text for _, text in parts).split("\n")
                items.append(f"{marker} {lines[0]}" + "".join(f"\n{indent}{line}" if line else "\n" for line in lines[1:]))
            out.append(("markdown", "\n".join(items)))
        elif isinstance(child, nodes.table):
            out.append(("markdown", table(child)))
        elif isinstance(child, nodes.figure):
            captions = [inline(part) for part in child.children if isinstance(part, nodes.caption)]
            legends = [" ".join(inline(p) for p in part.children) for part in child.children
                       if isinstance(part, nodes.legend)]  # fmt: skip
            text = " ".join(captions + legends)
            out.append(("markdown", f"*Figure (on the post's page): {text}*"))
        elif isinstance(child, nodes.footnote):
            label = child[0].astext()
            body = " ".join(inline(part) for part in child.children[1:])
            out.append(("markdown", f"[{label}] {body}"))
        elif isinstance(child, nodes.block_quote):
            parts = []
            blocks(child, level, parts)
            out.append(("markdown", "\n".join("> " + text for _, text in parts)))
        elif isinstance(child, nodes.system_message) and child["level"] >= 2:
            raise ValueError(f"make_notebooks.py: the post's reST has a problem: {child.astext().strip()}")
        elif isinstance(child, nodes.comment | nodes.target | nodes.system_message):
            continue  # comments (Nikola's metadata, TEASER_END), link targets, notes below warnings
        elif isinstance(child, nodes.compound | nodes.container):
            blocks(child, level, out)
        else:
            raise ValueError(f"make_notebooks.py cannot convert a {type(child).__name__} yet")


# ---- The notebook -----------------------------------------------------------------------------------------


def imported_listings(name, top_level):
    """The listings ``name`` imports: at module level (``top_level``), or anywhere in it."""
    tree = ast.parse((LISTINGS_DIR / f"{name}.py").read_text())
    found = []
    for node in tree.body if top_level else ast.walk(tree):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        modules += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        found += [module for module in modules if (LISTINGS_DIR / f"{module}.py").is_file() and module != name]
    return found


def local_imports(names):
    """``names`` and every listing they import, directly or not, each after the listings it imports at module
    level (an import inside a function, which may be circular, only needs the file by the time it runs)."""
    needed, queue = [], list(names)
    while queue:
        name = queue.pop(0)
        if name not in needed:
            needed.append(name)
            queue += imported_listings(name, top_level=False)
    ordered = []

    def visit(name, path=()):
        if name in path:
            raise ValueError(f"The listings import one another at module level: {' -> '.join([*path, name])}")
        if name not in ordered:
            for module in imported_listings(name, top_level=True):
                visit(module, (*path, name))
            ordered.append(name)

    for name in needed:
        visit(name)
    return ordered


def quoted_listings(text):
    return [pathlib.Path(path).stem for path in re.findall(r"^\.\. listing:: (\S+)", text, flags=re.MULTILINE)]


def run_cell(name, arguments, quick):
    """A cell that runs ``name``'s ``main`` (the program's command line, as a function)."""
    call = repr(arguments) if quick is None else f"{quick!r} if QUICK else {arguments!r}"
    return f"import {name}\n\nassert {name}.main({call}) == 0"


def notebook(post_path):
    import nbformat

    text = post_path.read_text()
    meta = metadata(text, post_path.name)
    slug = meta["slug"]
    if slug not in RUNS:
        raise ValueError(f"{post_path.name}: no runs for the slug {slug!r} in make_notebooks.RUNS. Expected one of "
                         f"{', '.join(sorted(RUNS))}")  # fmt: skip
    filled = fill_results(text, meta.get("results") or "results/vae/main_post.json")
    parts = []
    blocks(doctree(filled), 1, parts)
    cells = [nbformat.v4.new_markdown_cell(
        f"# {meta['title']}\n\n*This notebook is the post of the same name, generated from it by "
        "`scripts/make_notebooks.py`: its prose, its maths and its code, and at the end the listings it quotes, "
        "written next to the notebook, and cells that run them. Run it from top to bottom.*"),
        nbformat.v4.new_code_cell(QUICK_CELL)]  # fmt: skip
    pending = []
    for kind, block in parts:  # one Markdown cell per section, headings starting a new one
        if kind == "heading" and pending:
            cells.append(nbformat.v4.new_markdown_cell("\n\n".join(pending)))
            pending = []
        pending.append(block)
    if pending:
        cells.append(nbformat.v4.new_markdown_cell("\n\n".join(pending)))
    runs = RUNS[slug]
    listings = local_imports([*quoted_listings(text), *(run[0] for run in runs)])
    cells.append(nbformat.v4.new_markdown_cell(
        "## Run it\n\nThe listings, each written to a file next to this notebook (they import one another), "
        "then the post's programs, called as functions with their command-line arguments. They read MNIST "
        "from `MNIST_DIR` or download it with `keras.datasets`."))  # fmt: skip
    for name in listings:
        source = (LISTINGS_DIR / f"{name}.py").read_text()
        cells.append(nbformat.v4.new_code_cell(f"%%writefile {name}.py\n{source}"))
    cells.extend(nbformat.v4.new_code_cell(run_cell(*run)) for run in runs)
    book = nbformat.v4.new_notebook(cells=cells)
    book.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })  # fmt: skip
    for index, cell in enumerate(book.cells):  # stable ids: the same post makes the same bytes
        cell.id = f"{slug[:40]}-{index}"
    nbformat.validate(book)
    return slug, nbformat.writes(book) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR), help="where to write (default: files/notebooks)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a notebook differs from its post")
    parser.add_argument("--if-stale", action="store_true", help="write only the notebooks that differ")
    args = parser.parse_args(argv)
    import provenance

    output_dir = pathlib.Path(args.output_dir)
    try:
        if not args.check:
            provenance.check_output_dir(output_dir)
        made = dict(notebook(path) for path in sorted(POSTS_DIR.glob("*.rst")))
    except (ValueError, KeyError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    stale = [slug for slug, text in made.items()
             if not (output_dir / f"{slug}.ipynb").is_file() or (output_dir / f"{slug}.ipynb").read_text() != text]
    # A notebook whose post is gone: removed from the committed folder, only reported elsewhere.
    extra = sorted({path.stem for path in output_dir.glob("*.ipynb")} - set(made)) if output_dir.is_dir() else []
    if args.check:
        if stale or extra:
            what = [f"{slug}.ipynb differs from its post" for slug in stale] + [f"{slug}.ipynb has no post"
                                                                               for slug in extra]  # fmt: skip
            parser.exit(1, f"{parser.prog}: stale: {', '.join(what[:3])}; run scripts/make_notebooks.py\n")
        print(f"{output_dir} is current")
        return 0
    for slug in made if not args.if_stale else stale:
        provenance.write_atomically(output_dir / f"{slug}.ipynb", lambda path, text=made[slug]: path.write_text(text))
    for slug in extra:
        if output_dir.resolve() == OUTPUT_DIR:
            (output_dir / f"{slug}.ipynb").unlink()
        else:
            print(f"{output_dir / slug}.ipynb has no post; left as it is")
    if args.if_stale and not stale and not extra:
        print(f"{output_dir} is current; nothing to write")
    else:
        print(f"wrote {len(made) if not args.if_stale else len(stale)} notebooks to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
