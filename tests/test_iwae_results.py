"""The IWAE post's committed table, measurements and figures are current and consistent.

Nothing here retrains to full length: the records' input hashes say whether
the committed outputs are stale, a quick run on the committed MNIST subset
checks that the scripts still produce every number the post reads, and the
figures are redrawn from the committed measurements and compared.
"""

import json

import pytest

import mc_samples_experiments
import plot_iwae
import train_iwae_table
from conftest import MNIST_SUBSET_DIR, REPO_ROOT, assert_figures_current, full_mnist, run_python

TABLE = train_iwae_table.OUTPUT_DIR / train_iwae_table.RECORD_NAME


@pytest.fixture(scope="module")
def table():
    return json.loads(TABLE.read_text())


def test_table_rows_are_complete_and_consistent(table):
    assert set(table["rows"]) == set(train_iwae_table.ROWS)
    for name, row in table["rows"].items():
        assert row["paper_test_nll"] == train_iwae_table.PAPER_TEST_NLL[name]
        assert row["settings"]["objective"] == train_iwae_table.ROWS[name]["objective"]
        assert row["settings"]["k"] == train_iwae_table.ROWS[name]["k"]
        assert row["num_epochs"] == sum(3**i for i in range(row["settings"]["stages"]))
        assert row["evaluation"] == train_iwae_table.EVALUATION
        assert 0 < row["test_nll_monte_carlo_stderr"] < row["test_nll_stderr_over_examples"] < 1
        # -L_k on the same binarised test images bounds the K = 5000 estimate from above.
        assert row["final_test_negative_bound"] > row["test_nll"] - 3 * row["test_nll_monte_carlo_stderr"], name
        # 784 log 2 = 543 nats is a coin per pixel; the paper's 3,280 epochs are out of reach.
        assert row["paper_test_nll"] < row["test_nll"] < 543
    # Paired on the same images: the mean difference is the difference of the means, its error smaller than
    # the errors over examples of the two rows combined (the images' own difficulty cancels).
    assert set(table["paired"]) == {f"{row}_vs_{reference}" for row, reference in train_iwae_table.COMPARISONS}
    for row, reference in train_iwae_table.COMPARISONS:
        paired, rows = table["paired"][f"{row}_vs_{reference}"], table["rows"]
        assert paired["difference"] == pytest.approx(rows[row]["test_nll"] - rows[reference]["test_nll"], abs=1e-6)
        unpaired = (
            rows[row]["test_nll_stderr_over_examples"] ** 2 + rows[reference]["test_nll_stderr_over_examples"] ** 2
        ) ** 0.5
        assert 0 < paired["stderr"] < unpaired


@pytest.mark.slow
def test_quick_table_run_writes_every_number_the_post_needs(table, tmp_path):
    env = {"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    result = run_python(
        ["scripts/train_iwae_table.py", "--quick", "--rows", "iwae-k5", "--output-dir", tmp_path], env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    quick = json.loads((tmp_path / "table.json").read_text())["rows"]["iwae-k5"]
    assert set(table["rows"]["iwae-k5"]) <= set(quick)  # and the stage-end scores the 13-epoch table predates
    assert set(quick["stage_test_nll"]) == {"1"}
    assert quick["num_epochs"] == 1 and quick["evaluation"]["num_samples"] == 20
    assert (tmp_path / "iwae-k5" / "vae.keras").is_file()
    again = run_python(
        ["scripts/train_iwae_table.py", "--quick", "--rows", "iwae-k5", "--if-stale", "--output-dir", tmp_path],
        env=env,
    )
    assert again.returncode == 0 and "nothing to train" in again.stdout


def test_the_table_goes_stale_when_the_objective_changes(table, monkeypatch, tmp_path):
    """Behaviour, not source text: a wrong bound (patched in) moves the row's fingerprint."""
    import fingerprint
    import objectives

    original = objectives.bound_from_log_weights

    def bound_from_log_weights(log_w, objective):  # the bound off by one nat
        return original(log_w, objective) - 1.0

    monkeypatch.setattr(fingerprint, "CACHE_DIR", tmp_path)  # the cache is keyed by source, which is unchanged
    monkeypatch.setattr(objectives, "bound_from_log_weights", bound_from_log_weights)
    moved = train_iwae_table.fingerprint_of("iwae-k5")
    assert fingerprint.differences(table["rows"]["iwae-k5"]["fingerprint"], moved)


def test_experiments_cover_every_setting():
    record = json.loads(mc_samples_experiments.RECORD_PATH.read_text())
    settings = mc_samples_experiments.SETTINGS
    assert record["settings"] == settings
    variance = record["gradient_variance"]
    for objective in ("elbo", "iwae"):
        assert sorted(map(int, variance[objective])) == settings["gradient_variance"]["mc_samples"]
    for budget in ("fixed_steps", "fixed_time"):
        assert len(record["grid"][budget]) == len(settings["grid"]["batch_sizes"]) * len(settings["grid"]["mc_samples"])
    for cell in record["grid"]["fixed_steps"].values():
        assert cell["steps"] == settings["grid"]["steps"]
    for cell in [*record["grid"]["fixed_steps"].values(), *record["grid"]["fixed_time"].values()]:
        # The post says train and test agree to a fraction of a nat (no overfitting yet).
        assert abs(cell["train_negative_elbo"] - cell["test_negative_elbo"]) < 1.0, cell
    for cell in record["grid"]["fixed_time"].values():
        # Stopped before a call of 10 steps would overrun the budget.
        assert 0.5 * settings["grid"]["seconds"] < cell["seconds"] < 1.1 * settings["grid"]["seconds"], cell
    for row in settings["bounds"]["rows"]:
        bounds = record["bounds"][row]
        ks = settings["bounds"]["ks"]
        assert bounds["k1"] == pytest.approx(bounds["elbo"], abs=1e-6)  # L_1 is the ELBO, same draws
        assert all(bounds[f"k{a}"] <= bounds[f"k{b}"] + 0.05 for a, b in zip(ks, ks[1:], strict=False))
    assert sorted(map(int, record["cost"])) == settings["cost"]["mc_samples"]


def test_elbo_gradient_variance_falls_as_one_over_s():
    variance = json.loads(mc_samples_experiments.RECORD_PATH.read_text())["gradient_variance"]["elbo"]
    samples = sorted(map(int, variance))
    first, last = variance[str(samples[0])]["total_variance"], variance[str(samples[-1])]["total_variance"]
    ratio = (first / last) / (samples[-1] / samples[0])
    assert 0.5 < ratio < 2.0, ratio  # 64 draws estimate a variance to about 18 %


def test_iwae_figures_redraw_from_the_committed_measurements(tmp_path):
    assert_figures_current("scripts/plot_iwae.py", plot_iwae.OUTPUT_DIR, plot_iwae.FIGURES, tmp_path)


@pytest.mark.slow
def test_quick_experiments_run_writes_every_measurement(tmp_path):
    """The measurement script still runs end to end (tiny settings, the committed models, the MNIST subset)."""
    output = tmp_path / "experiments.json"
    result = run_python(
        ["scripts/mc_samples_experiments.py", "--quick", "--output", output], env={"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    quick = json.loads(output.read_text())
    committed = json.loads(mc_samples_experiments.RECORD_PATH.read_text())
    assert set(quick) == set(committed)
    assert set(quick["bounds"]["iwae-k50"]) == {"elbo", "k1", "k10", "k100"}
    assert len(quick["reconstructions"]["samples"]) == 3 and len(quick["reconstructions"]["digit"]) == 784
    figures = run_python(["scripts/plot_iwae.py", "--experiments", output, "--output-dir", tmp_path])
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert all((tmp_path / name).stat().st_size > 1000 for name in plot_iwae.FIGURES)


# Last in the module: the quick runs (the fingerprints' own runs) have left today's fingerprints in the cache.
@full_mnist
def test_table_matches_its_inputs():
    result = run_python(["scripts/train_iwae_table.py", "--check"])
    assert result.returncode == 0, f"results/iwae is stale: {result.stderr.strip()[-500:]}"


@full_mnist
def test_experiments_match_their_inputs():
    result = run_python(["scripts/mc_samples_experiments.py", "--check"])
    assert result.returncode == 0, f"results/iwae/experiments.json is stale: {result.stderr.strip()[-500:]}"


def test_a_rerun_from_the_same_seed_repeats_the_tables_training():
    """Seed 0 of the seed study repeats the committed rows' training and test losses epoch by epoch, so the
    difference between two rows is not a run that cannot be repeated (the post says so)."""
    seed_0 = REPO_ROOT / "results" / "seeds" / "iwae" / "seed-0"
    for row in ("vae-k1", "vae-k50", "iwae-k1", "iwae-k50"):
        rerun = json.loads((seed_0 / row / "history.json").read_text())
        committed = json.loads((train_iwae_table.OUTPUT_DIR / row / "history.json").read_text())
        epochs = len(rerun["loss"])
        assert committed["loss"][:epochs] == rerun["loss"], row
        assert committed["val_loss"][:epochs] == rerun["val_loss"], row


# ---------------------------------------------------------------------------
# results/iwae-long: the same rows trained on, stage by stage
# ---------------------------------------------------------------------------

LONG_TABLE = train_iwae_table.LONG_DIR / train_iwae_table.RECORD_NAME


def test_the_long_rows_went_on_through_every_stage():
    """Each row of ``results/iwae-long`` trained the paper's first five stages (121 epochs) and kept its state
    (the file the record names, after the last epoch), so a later run can add stages; its stage-end scores
    are those of its ``stages.json``; its first 13 epochs are the 13-epoch table's row, loss for loss; and its
    13-epoch score is that row's own on the same 1,000 test images (the same draws), as its last one is the
    full evaluation's on them."""
    import numpy as np

    import provenance

    rows = json.loads(LONG_TABLE.read_text())["rows"]
    assert rows and set(rows) <= set(train_iwae_table.ROWS)
    stages = train_iwae_table.LONG_STAGES
    ends = [train_iwae_table.paper_epochs(stage) for stage in range(1, stages + 1)]
    assert ends[-1] == 121
    for name, row in rows.items():
        row_dir = train_iwae_table.LONG_DIR / name
        assert row["settings"]["stages"] == stages and row["num_epochs"] == ends[-1], name
        state = row_dir / train_iwae_table.STATE_NAME
        assert row["state"] == {"epoch": ends[-1], "sha256": provenance.file_sha256(state)}, name
        assert sorted(map(int, row["stage_test_nll"])) == ends, name
        assert row["stage_test_nll"] == json.loads((row_dir / train_iwae_table.STAGES_NAME).read_text()), name
        long_history = json.loads((row_dir / "history.json").read_text())
        short_history = json.loads((train_iwae_table.OUTPUT_DIR / name / "history.json").read_text())
        assert long_history["loss"][:13] == short_history["loss"], name
        for epochs, folder in ((13, train_iwae_table.OUTPUT_DIR), (ends[-1], train_iwae_table.LONG_DIR)):
            log_px = np.load(folder / name / "log_px.npz")["log_px"][: train_iwae_table.CURVE_EXAMPLES]
            assert row["stage_test_nll"][str(epochs)]["test_nll"] == pytest.approx(-log_px.mean(), abs=1e-3), name
        assert row["evaluation"] == train_iwae_table.EVALUATION
        assert 0 < row["test_nll_monte_carlo_stderr"] < row["test_nll_stderr_over_examples"] < 1
        assert row["final_test_negative_bound"] > row["test_nll"] - 3 * row["test_nll_monte_carlo_stderr"], name


@full_mnist
def test_the_long_table_matches_its_inputs():
    result = run_python(["scripts/train_iwae_table.py", "--check", "--output-dir", train_iwae_table.LONG_DIR])
    assert result.returncode == 0, f"results/iwae-long is stale: {result.stderr.strip()[-500:]}"


def test_every_long_row_closed_more_than_half_of_its_gap():
    """The IWAE post says that between 13 and 121 epochs every row closed more than half of its gap to the
    paper: the NLL it lost on all 10,000 test images exceeds the gap it has left."""
    short_rows = json.loads((train_iwae_table.OUTPUT_DIR / train_iwae_table.RECORD_NAME).read_text())["rows"]
    long_rows = json.loads(LONG_TABLE.read_text())["rows"]
    post = (REPO_ROOT / "posts" / "inference-in-variational-autoencoders-with-different-monte-carlo-sample-sizes.rst")
    if "closed more than half of its gap" not in " ".join(post.read_text().split()):
        pytest.skip("the post no longer says so")
    assert set(long_rows) == set(train_iwae_table.ROWS), "the sentence speaks of every row"
    for name, row in long_rows.items():
        gained = short_rows[name]["test_nll"] - row["test_nll"]
        assert gained > row["test_nll"] - row["paper_test_nll"], name
