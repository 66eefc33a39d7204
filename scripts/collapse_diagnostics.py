"""Record the KL per dimension and the active units of the committed models with more than two latent dimensions.

For every model below, its encoder's posterior means and log variances of
the 10,000 MNIST test images, binarised once (seed 1, as the IWAE table's
test log-likelihoods), give per dimension the KL from the prior and Burda
et al.'s activity (``listings/vae/posterior_collapse.py``); the record
``results/collapse/diagnostics.json`` holds them with the count of active
units, and the hashes of the models and data they came from. Reading only
committed models, it runs in minutes (the Monte Carlo means dominate);
``--check`` exits 1 when a model or the data changed since.

The models: the IWAE table's six rows after 13 epochs (``results/iwae``), the
rows trained on through stage 4 (``results/iwae-long``), the flows post's
MNIST models (``results/flows/mnist``, d = 50) and the AVB post's
(``results/avb/mnist``, d = 8). A flow's or an implicit posterior's mean has
no closed form and its KL does not split over the dimensions: for those the
record holds the activity of posterior means estimated from
``num_samples`` draws per image (`posterior_collapse.posterior_means`), and
no KL.
"""

import argparse
import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402
from mnist_data import MNISTError  # noqa: E402

OUTPUT = REPO_ROOT / "results" / "collapse" / "diagnostics.json"
# group: (folder, the models' file pattern in it). A model is named by its folder (``<row>/vae.keras``) or file.
GROUPS = {
    "iwae": (REPO_ROOT / "results" / "iwae", "*/vae.keras"),
    "iwae-long": (REPO_ROOT / "results" / "iwae-long", "*/vae.keras"),
    "flows": (REPO_ROOT / "results" / "flows" / "mnist", "*.keras"),
    "avb": (REPO_ROOT / "results" / "avb" / "mnist", "*.keras"),
}
SETTINGS = {"num_examples": 10000, "binarization_seed": 1, "threshold": 0.01, "num_samples": 1000, "seed": 0}


def model_paths():
    """``{"<group>/<model>": path}`` of every committed model of the groups, in order."""
    return {f"{group}/{path.parent.name if path.name == 'vae.keras' else path.stem}": path
            for group, (folder, pattern) in GROUPS.items() for path in sorted(folder.glob(pattern))}  # fmt: skip


def diagnose(paths):
    """The record's ``models``: per model its latent size, active units, total KL, and both per dimension."""
    import compose  # noqa: F401  (registers the layers)
    from mnist_data import binarize_once, flatten_and_scale, load_mnist
    from outputs import load_saved_model
    from posterior_collapse import (
        active_units,
        activity,
        has_gaussian_posterior,
        kl_per_dimension,
        posterior_means,
        posterior_statistics,
    )

    _, (x_test, _) = load_mnist()
    x = binarize_once(flatten_and_scale(x_test[: SETTINGS["num_examples"]]), SETTINGS["binarization_seed"])
    models = {}
    for name, path in paths.items():
        vae = load_saved_model(path)
        if has_gaussian_posterior(vae):
            z_mean, z_log_var = posterior_statistics(vae, x)
            kl = kl_per_dimension(z_mean, z_log_var)
        else:  # a flow or an implicit posterior: means by Monte Carlo, and no KL per dimension
            z_mean, kl = posterior_means(vae, x, SETTINGS["num_samples"], SETTINGS["seed"]), None
        models[name] = {
            "latent_dim": int(z_mean.shape[1]),
            "posterior_means": "closed_form" if kl is not None else "monte_carlo",
            "active_units": active_units(z_mean, SETTINGS["threshold"]),
            "kl": float(kl.sum()) if kl is not None else None,
            "kl_per_dimension": [round(float(value), 6) for value in kl] if kl is not None else None,
            "activity": [round(float(value), 6) for value in activity(z_mean)],
        }
        # How far the count is from the threshold: a dimension just above it or just below it is a near call.
        values, threshold = activity(z_mean), SETTINGS["threshold"]
        active, inactive = values[values > threshold], values[values <= threshold]
        models[name]["smallest_active"] = round(float(active.min()), 6) if len(active) else None
        models[name]["largest_inactive"] = round(float(inactive.max()), 6) if len(inactive) else None
        total = f", KL {models[name]['kl']:.2f} nats" if kl is not None else " (means by Monte Carlo)"
        print(f"{name}: {models[name]['active_units']} active units of {models[name]['latent_dim']}{total}", flush=True)
    return models


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(OUTPUT), help="the record (default: results/collapse/diagnostics.json)")
    parser.add_argument("--if-stale", action="store_true", help="diagnose only when the record is stale")
    parser.add_argument("--check", action="store_true", help="exit 1 when the record is stale")
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output)
    try:
        if not args.check:
            provenance.check_output_dir(output.parent, [output.name])
        paths = model_paths()
        inputs = provenance.input_hashes([*paths.values(), *provenance.mnist_data_files()], SETTINGS)
        if args.if_stale or args.check:
            record = provenance.read_record(output)
            stale = provenance.stale_inputs(record, inputs)
            if args.check and stale:
                parser.exit(1, f"{parser.prog}: stale: {output.name}: {provenance.describe_stale({'inputs': stale})}\n")
            if not stale:
                print(f"{output} is current" + ("" if args.check else "; nothing to diagnose"))
                return 0
        models = diagnose(paths)
    except (ValueError, MNISTError, provenance.ModelFileError) as error:  # a RecordError is a ValueError
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    provenance.write_record(output, {"settings": SETTINGS, "inputs": inputs, "models": models})
    return 0


if __name__ == "__main__":
    sys.exit(main())
