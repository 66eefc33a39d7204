"""Check that every ordering the site states rests on records that support it.

``posts/claims.toml`` declares, post by post, each sentence whose ordering
words ("better", "beats", "helps", "faster", ...; `ORDERING`) rank things
the site measured, next to the evidence it rests on, and each sentence whose
ordering words rank nothing measured (a theorem, a table's "lower is
better"), with the reason. Evidence comes in two kinds:

* ``seeds``: a comparison of two trained models, as a key of a record
  holding ``per_seed`` paired differences (each the mean over the same test
  images of one seed's per-image difference, with its standard error). It
  supports the claim when there are at least `MIN_SEEDS` seeds, every seed's
  difference has the claimed sign, and their mean is at least
  ``t(0.975, n - 1)`` standard errors (over seeds) from zero: a two-sided
  t-test at 5% across training seeds, the noise the test images' standard
  error leaves out.
* ``interleaved``: a speed comparison, as the key of a record's smallest
  ratio over interleaved repeats (the slower run's time over the faster's,
  repeat by repeat, in one run of ``benchmark.py``). It supports the claim
  when that ratio exceeds 1: every repeat agrees. With ``inverse = true`` the
  key is the largest ratio the other way round (the faster's time over the
  slower's), which must stay below 1.

``python scripts/claims.py`` prints every claim with its evidence and exits
1, with one line per problem, when a claim is not supported, its sentence is
gone, or a sentence has an ordering word that the file does not declare.
"""

import argparse
import json
import math
import pathlib
import re
import sys
import tomllib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CLAIMS = REPO_ROOT / "posts" / "claims.toml"
SOURCES = ["posts/*.rst", "pages/*.rst"]
MIN_SEEDS = 3
# Words that order two things. "--help" is an option, not a verdict.
ORDERING = re.compile(
    r"(?<!-)\b(better|worse|best|worst(?! pair)|beats?|beaten|outperform\w*|help(?:s|ed)?|hurts?|"
    r"paid for themselves|pays? off|ahead|fall(?:s|en)? behind|fell behind|improv\w*|wins?|won|superior|inferior|"
    r"gains?|faster|fastest|slower|slowest)\b",
    re.IGNORECASE,
)
# t(0.975, n - 1) for n - 1 = 1 .. 10: a two-sided 95% interval over seeds.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


class ClaimsError(ValueError):
    """A claims file that cannot be read; one line."""


def normalise(text):
    return " ".join(text.split())


def sentences(path):
    """The prose sentences of a post or page, whitespace normalised; references and code left out."""
    kept, skipping = [], False
    for line in pathlib.Path(path).read_text().splitlines():
        if re.match(r"\.\. (\[#|listing::|code-block::|math::)", line):
            skipping = True  # a reference or a block, up to the next unindented line
            continue
        if skipping and (not line.strip() or line.startswith((" ", "\t"))):
            continue
        skipping = False
        kept.append(line)
    text = normalise("\n".join(kept))
    return re.split(r"(?<=[.!?:])\s+(?=[A-Z*({])", text)


def read_claims(path=CLAIMS):
    """``{"claim": [...], "not_a_ranking": [...]}`` from the TOML file; a ClaimsError naming what is wrong."""
    try:
        declared = tomllib.loads(pathlib.Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ClaimsError(f"Could not read {path}: {error}") from None
    for kind, needs in (("claim", {"source", "says", "evidence"}), ("not_a_ranking", {"source", "says", "why"})):
        for entry in declared.setdefault(kind, []):
            missing = needs - set(entry)
            if missing:
                raise ClaimsError(f"{path}: a [[{kind}]] without {sorted(missing)}: {entry}")
    return declared


def lookup(record, key):
    value = record
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(key)
        value = value[part]
    return value


def seeds_support(comparison, sign):
    """``(supported, one line)`` for a ``per_seed`` comparison and the claimed sign (+1 or -1)."""
    from seeds import spread

    differences = [entry["difference"] for entry in comparison.get("per_seed", [])]
    n = len(differences)
    if n < MIN_SEEDS:
        return False, f"{n} seed(s), at least {MIN_SEEDS} needed"
    s = spread(comparison["per_seed"])  # the same mean, SD and t as the study's record
    t = s["t"] if s["t"] is not None else math.copysign(math.inf, s["mean"])
    critical = T_975[min(n - 1, len(T_975)) - 1]
    agree = all(d * sign > 0 for d in differences)
    line = (f"mean {s['mean']:+.2f} over {n} seeds (SD {s['sd']:.2f}), t = {t:+.1f} against {critical:.2f}; per "
            "seed " + ", ".join(f"{d:+.2f}" for d in differences))  # fmt: skip
    return agree and t * sign >= critical, line


def check_evidence(evidence):
    """``(supported, one line)`` for one piece of a claim's evidence."""
    path = REPO_ROOT / evidence["record"]
    try:
        record = json.loads(path.read_text())
        value = lookup(record, evidence["key"])
    except (OSError, ValueError, KeyError) as error:
        return False, f"{evidence['record']}: no {evidence['key']} ({type(error).__name__})"
    if evidence["kind"] == "seeds":
        sign = {"positive": 1, "negative": -1}[evidence["sign"]]
        return seeds_support(value, sign)
    if evidence["kind"] == "interleaved" and evidence.get("inverse"):
        return value < 1, f"largest ratio over interleaved repeats {value:.2f} (every repeat agrees when < 1)"
    if evidence["kind"] == "interleaved":
        return value > 1, f"smallest ratio over interleaved repeats {value:.2f} (every repeat agrees when > 1)"
    return False, f"unknown kind of evidence {evidence['kind']!r}; expected seeds or interleaved"


def problems(declared, sources=None):
    """Every problem as one line: unsupported claims, declared sentences that are gone, undeclared orderings.

    ``sources``: ``{name: path}`` to check (default: the site's posts and pages, named as in the file);
    entries of other sources are left out.
    """
    found = []
    if sources is None:
        paths = sorted(path for pattern in SOURCES for path in REPO_ROOT.glob(pattern))
        sources = {path.relative_to(REPO_ROOT).as_posix(): path for path in paths}
    by_source = {name: sentences(path) for name, path in sources.items()}
    entries = [("claim", entry) for entry in declared["claim"]]
    entries += [("not_a_ranking", entry) for entry in declared["not_a_ranking"]]
    entries = [(kind, entry) for kind, entry in entries if entry["source"] in by_source]
    covered = {source: set() for source in by_source}
    for kind, entry in entries:
        says = normalise(entry["says"])
        hits = [i for i, sentence in enumerate(by_source[entry["source"]]) if says in sentence]
        if not hits:
            found.append(f"{entry['source']}: declared sentence not found: {says!r}")
        covered[entry["source"]].update(hits)
        if kind == "claim":
            for evidence in entry["evidence"]:
                supported, line = check_evidence(evidence)
                if not supported:
                    found.append(f"{entry['source']}: {says!r} is not supported by {evidence['key']}: {line}")
    for source, text in by_source.items():
        for i, sentence in enumerate(text):
            match = ORDERING.search(sentence)
            if match and i not in covered[source]:
                found.append(f"{source}: undeclared ordering {match.group(0)!r} in: {sentence[:160]!r}")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", default=str(CLAIMS), help="the declarations (default: posts/claims.toml)")
    args = parser.parse_args(argv)
    try:
        declared = read_claims(args.claims)
    except ClaimsError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for entry in declared["claim"]:
        print(f"{entry['source']}: {normalise(entry['says'])!r}")
        for evidence in entry["evidence"]:
            supported, line = check_evidence(evidence)
            print(f"  {'supported' if supported else 'NOT SUPPORTED'}: {evidence['key']}: {line}")
    found = problems(declared)
    for line in found:
        print(line, file=sys.stderr)
    print(f"{len(declared['claim'])} claims, {len(declared['not_a_ranking'])} sentences that rank nothing measured; "
          f"{len(found)} problems")  # fmt: skip
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
