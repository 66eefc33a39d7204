"""Gather the paired differences of models trained from several seeds into one record per study.

A study is a set of records of the same experiment, one per training seed:
the committed record (seed 0) and the records of ``--seed 1``, ``--seed 2``,
... runs of the same script into ``results/seeds/<study>/seed-<n>/``. Each
record holds, per comparison of two models, the paired difference of their
test log-likelihoods (the mean over the same test images of the per-image
difference) and its standard error. For every comparison the study's record
``results/seeds/<study>.json`` lists them seed by seed (``per_seed``) with
their mean, standard deviation and t statistic over seeds: the spread that
one training run's standard error leaves out. ``posts/claims.toml`` rests
ranking claims on these (``scripts/claims.py``).

``python scripts/seeds.py`` gathers every study whose seed records exist;
``--check`` exits 1 when a study's record does not match its seed records.
"""

import argparse
import math
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "seeds"
# study: (the seed-0 record, the record's name in a seed folder, the key of its paired comparisons,
#         the command that makes seed n's record)
STUDIES = {
    "iwae": (
        "results/seeds/iwae/seed-0/table.json",
        "table.json",
        "paired",
        "python scripts/train_iwae_table.py --stages 3 --rows vae-k1,vae-k50,iwae-k1,iwae-k50 --seed {seed} "
        "--output-dir results/seeds/iwae/seed-{seed}",
    ),
    "flows": (
        "results/flows/mnist.json",
        "mnist.json",
        "results.paired_with_gaussian",
        "python scripts/flow_experiments.py --parts mnist --seed {seed} --output-dir results/seeds/flows/seed-{seed}",
    ),
    "conv-mnist": (
        "results/conv/mnist.json",
        "mnist.json",
        "results.paired_with_mlp",
        "python scripts/conv_experiments.py --parts mnist --seed {seed} "
        "--output-dir results/seeds/conv-mnist/seed-{seed}",
    ),
    "conv-fashion-mnist": (
        "results/conv/fashion_mnist.json",
        "fashion_mnist.json",
        "results.paired_with_mlp",
        "python scripts/conv_experiments.py --parts fashion_mnist --seed {seed} "
        "--output-dir results/seeds/conv-fashion-mnist/seed-{seed}",
    ),
    "gradients": (
        "results/gradients/training.json",
        "training.json",
        "results.paired_with_total",
        "python scripts/gradient_experiments.py --parts training --seed {seed} "
        "--output-dir results/seeds/gradients/seed-{seed}",
    ),
    "classification": (
        "results/likelihoods/classification.json",
        "classification.json",
        "results.paired_with_ml",
        "python scripts/likelihood_experiments.py --parts classification --seed {seed} "
        "--output-dir results/seeds/classification/seed-{seed}",
    ),
}


def seed_records(study, output_dir=OUTPUT_DIR):
    """``{seed: path}`` of the study's records that exist, seed 0 first."""
    first, name, _, _ = STUDIES[study]
    paths = {0: REPO_ROOT / first}
    for folder in sorted((output_dir / study).glob("seed-*")):
        seed = folder.name.removeprefix("seed-")
        if seed.isdigit() and int(seed) and (folder / name).is_file():
            paths[int(seed)] = folder / name
    return {seed: path for seed, path in sorted(paths.items()) if path.is_file()}


def spread(per_seed):
    """Mean, standard deviation and t statistic over seeds of the per-seed differences."""
    differences = [entry["difference"] for entry in per_seed]
    n = len(differences)
    mean = sum(differences) / n
    if n < 2:
        return {"num_seeds": n, "mean": mean, "sd": None, "stderr": None, "t": None}
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    stderr = sd / math.sqrt(n)
    return {"num_seeds": n, "mean": mean, "sd": sd, "stderr": stderr, "t": mean / stderr if stderr else None}


def gather(study, output_dir=OUTPUT_DIR):
    """The study's record: per comparison, every seed's paired difference and their spread."""
    _, _, key, command = STUDIES[study]
    paths = seed_records(study, output_dir)
    comparisons = {}
    for seed, path in paths.items():
        record = provenance.read_json(path)
        paired = record
        for part in key.split("."):
            paired = paired.get(part, {})
        for name, value in paired.items():
            entry = {"seed": seed, "difference": value["difference"], "stderr": value["stderr"]}
            comparisons.setdefault(name, {"per_seed": []})["per_seed"].append(entry)
    for comparison in comparisons.values():
        comparison.update(spread(comparison["per_seed"]))
    inputs = {f"seed-{seed}": provenance.file_sha256(path) for seed, path in paths.items()}
    return {"comparisons": comparisons, "seeds": sorted(paths), "inputs": inputs, "command": command}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", default=",".join(STUDIES), help="comma-separated (default: all)")
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR), help="where the seed folders and records are")
    parser.add_argument("--check", action="store_true", help="exit 1 when a study's record is stale")
    parser.add_argument("--if-stale", action="store_true", help="write only stale records (what it always does)")
    args = parser.parse_args(argv)
    studies = [name.strip() for name in args.studies.split(",") if name.strip()]
    unknown = [name for name in studies if name not in STUDIES]
    if unknown or not studies:
        parser.exit(2, f"{parser.prog}: error: unknown studies {unknown}; expected some of {', '.join(STUDIES)}\n")
    output_dir = pathlib.Path(args.output_dir)
    if not args.check:
        try:  # before the work: a folder that can take the records
            provenance.check_output_dir(output_dir, [f"{study}.json" for study in studies])
        except ValueError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
    stale = []
    for study in studies:
        path = output_dir / f"{study}.json"
        try:
            record = gather(study, output_dir)
            stored = provenance.read_record(path)
        except (provenance.RecordError, ValueError) as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        if len(record["seeds"]) < 2:
            if stored is not None:
                stale.append(f"{study} (its seed records are gone)")
            continue
        if stored == record:
            print(f"{path} is current")
            continue
        if args.check:
            stale.append(study)
            continue
        provenance.write_record(path, record)
        print(f"{study}: {len(record['seeds'])} seeds; wrote {path}")
        for name, comparison in record["comparisons"].items():
            print(f"  {name}: {comparison['mean']:+.2f} (SD {comparison['sd']:.2f} over seeds), per seed "
                  + ", ".join(f"{entry['difference']:+.2f}" for entry in comparison["per_seed"]))  # fmt: skip
    if stale:
        parser.exit(1, f"{parser.prog}: stale: {', '.join(stale)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
