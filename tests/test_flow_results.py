"""The flows post's committed measurements, flows and figures are current and say what the post says.

Nothing here retrains to full length: the records' input hashes say whether
they are stale, the committed 2-D flows are re-scored and compared with the
record, a quick run checks that the script still produces every number the
post reads, and the figures are redrawn and compared byte for byte.
"""

import json
import math
import pathlib

import keras
import numpy as np
import pytest

import flow_densities
import flow_experiments
import plot_flows
import provenance
from conftest import (
    MNIST_SUBSET_DIR,
    REPO_ROOT,
    assert_figures_current,
    assert_parts_current,
    assert_settings_recorded,
    full_mnist,
    run_python,
)

RESULTS = flow_experiments.OUTPUT_DIR


def record(part):
    return json.loads((RESULTS / f"{part}.json").read_text())


def test_records_hold_the_committed_settings():
    assert_settings_recorded(flow_experiments)


def test_longer_planar_flows_fit_every_density_better():
    toy = record("toy")["results"]
    lengths = flow_experiments.SETTINGS["toy"]["flows"]["planar"]
    for target in flow_experiments.SETTINGS["toy"]["targets"]:
        kls = [toy["kl"][f"{target}-planar-{k}"] for k in lengths]
        for cell in kls:
            assert cell["kl"] > -4 * cell["stderr"], (target, cell)  # a KL divergence is not negative
            assert cell["stderr"] < 0.01, (target, cell)
        assert all(longer["kl"] < shorter["kl"] for shorter, longer in zip(kls[:-1], kls[1:], strict=True)), target
        assert kls[-1]["kl"] < 0.05, target  # "within a few hundredths of a nat"
    # Both arcs of U1 hold half the mass, with annealing and (as the post says) without it.
    for cell in (toy["kl"]["U1-planar-32"], toy["without_annealing"]):
        assert cell["kl"] < 0.05 and abs(cell["share_z1_positive"] - 0.5) < 0.05, cell


@pytest.mark.slow
def test_the_committed_2d_flows_reproduce_their_record():
    toy = record("toy")
    settings = toy["settings"]
    for name, cell in toy["results"]["kl"].items():
        flow = keras.saving.load_model(RESULTS / "toy" / f"{name}.keras", safe_mode=True)
        kl, stderr = flow_densities.reverse_kl(name.split("-")[0], flow, settings["kl_samples"], settings["seed"] + 1)
        assert kl == pytest.approx(cell["kl"], abs=1e-3), name  # float32 rounding differs between CPUs
    for target, log_z in toy["results"]["log_normaliser"].items():
        assert flow_densities.log_normaliser(target) == pytest.approx(log_z, abs=1e-9)


def test_the_mnist_table_is_complete_and_consistent():
    mnist = record("mnist")
    settings = mnist["settings"]
    epochs = {mnist["results"][row]["num_epochs"] for row in settings["rows"]}
    assert epochs == {13}  # the same budget for every row: 1 + 3 + 9 epochs
    per_image = np.load(RESULTS / "mnist" / "log_px.npz")
    for row, choice in settings["rows"].items():
        result = mnist["results"][row]
        assert {key: result[key] for key in choice} == choice
        # log p(x) >= ELBO: the importance-sampled NLL is below the negative ELBO.
        assert result["test_nll"] < result["final_test_negative_elbo"], row
        assert 60 < result["test_nll"] < 543, row  # 784 log 2 = 543 nats is a coin per pixel
        assert per_image[row].shape == (settings["num_test"],)
        np.testing.assert_allclose(-per_image[row].mean(), result["test_nll"], rtol=1e-9)
        assert (RESULTS / "mnist" / f"{row}.keras").is_file()
    for row, paired in mnist["results"]["paired_with_gaussian"].items():
        difference = per_image[row] - per_image["gaussian"]
        assert paired["difference"] == pytest.approx(difference.mean(), rel=1e-9), row
    assert mnist["results"]["paper_test_nll"] == flow_experiments.PAPER_TEST_NLL


def test_the_mnist_claims_of_the_post_hold():
    """Both flows raise log p(x) over the Gaussian on the same test images by more than five paired standard
    errors; the IAF lowers the negative ELBO too, ten planar flows do not, and their ELBO-NLL gap is the
    largest. The post says each in those terms."""
    rows = record("mnist")["results"]
    gaussian, planar, iaf = rows["gaussian"], rows["planar-k10"], rows["iaf-k2"]
    for paired in rows["paired_with_gaussian"].values():
        assert paired["difference"] > 5 * paired["stderr"], paired
    assert iaf["final_test_negative_elbo"] < gaussian["final_test_negative_elbo"]
    assert planar["final_test_negative_elbo"] >= gaussian["final_test_negative_elbo"]
    gaps = {name: row["final_test_negative_elbo"] - row["test_nll"] for name, row in rows.items() if name in
            ("gaussian", "planar-k10", "iaf-k2")}  # fmt: skip
    assert max(gaps, key=gaps.get) == "planar-k10", gaps
    text = " ".join((REPO_ROOT / "posts" / "normalizing-flows-in-keras.rst").read_text().split())
    assert "far outside the noise of the test images" in text
    assert "In this run the ten planar flows moved the NLL but not the bound" in text
    assert "With one seed per row the order of the three models is not established" in text
    assert "the planar posterior ends further from its decoder's true posterior" in text


def test_the_cost_claims_of_the_post_hold():
    """Timed interleaved, each run in a fresh process: the table's ratios are the two rows' times repeat by
    repeat (neighbours in time); 32 planar flows cost well over twice the flowless model in every repeat;
    four IAF steps cost about what eight planar flows do (medians within 30%)."""
    results = record("cost")["results"]
    settings = flow_experiments.SETTINGS["cost"]
    names = [f"{flow}-{k}" for flow, lengths in settings["flows"].items() for k in lengths]
    per_repeat = {name: np.array(results[name]["seconds_per_epoch_per_repeat"]) for name in names}
    for name in names:
        assert len(per_repeat[name]) == settings["repeats"], name
        assert results[name]["seconds_per_epoch"] == pytest.approx(np.median(per_repeat[name])), name
    assert set(results["paired"]) == {
        "planar-2_over_planar-0", "planar-8_over_planar-2", "planar-32_over_planar-8",
        "iaf-1_over_planar-0", "iaf-2_over_iaf-1", "iaf-4_over_iaf-2",
    }  # fmt: skip
    for name, ratio in results["paired"].items():
        top, bottom = name.split("_over_")
        pairs = per_repeat[top] / per_repeat[bottom]
        assert ratio == pytest.approx({"median": np.median(pairs), "min": pairs.min(), "max": pairs.max()}), name
    assert (per_repeat["planar-32"] > 2 * per_repeat["planar-0"]).all()
    # The post: these cost time in every repeat; the others' ranges hold 1, "no time this run can measure" (which
    # are which moves from run to run on two cores: the post names this run's).
    text = " ".join((REPO_ROOT / "posts" / "normalizing-flows-in-keras.rst").read_text().split())
    assert "other lengths cost time in every repeat" in text and "cost no time this run can measure" in text
    for name in ("planar-2_over_planar-0", "planar-8_over_planar-2", "planar-32_over_planar-8", "iaf-1_over_planar-0",
                 "iaf-4_over_iaf-2"):  # fmt: skip
        assert results["paired"][name]["min"] > 1, name
    for name in ("iaf-2_over_iaf-1",):
        assert results["paired"][name]["min"] < 1 < results["paired"][name]["max"], name
    cost = {name: results[name]["seconds_per_epoch"] for name in names}
    assert abs(cost["iaf-4"] - cost["planar-8"]) < 0.3 * cost["planar-8"]


def test_the_2d_iaf_claims_of_the_post_hold():
    """The IAF settles on one arc of U1 (a KL near log 2) and stays behind planar flows of the same length."""
    kl = record("toy")["results"]["kl"]
    assert abs(kl["U1-iaf-32"]["kl"] - math.log(2)) < 0.15
    assert min(kl["U1-iaf-32"]["share_z1_positive"], 1 - kl["U1-iaf-32"]["share_z1_positive"]) < 0.05
    for target in flow_experiments.SETTINGS["toy"]["targets"]:
        assert kl[f"{target}-iaf-32"]["kl"] > kl[f"{target}-planar-32"]["kl"], target


def test_the_gaussian_row_reproduces_the_iwae_tables_vae():
    """K = 0 is the IWAE post's VAE trained the same way: the two test NLLs agree within a nat."""
    iwae = json.loads((REPO_ROOT / "results" / "iwae" / "table.json").read_text())["rows"]["vae-k1"]
    gaussian = record("mnist")["results"]["gaussian"]
    assert abs(gaussian["test_nll"] - iwae["test_nll"]) < 1.0, (gaussian["test_nll"], iwae["test_nll"])


@pytest.mark.slow
def test_quick_run_writes_every_number_the_post_reads(tmp_path):
    result = run_python(
        ["scripts/flow_experiments.py", "--quick", "--output-dir", tmp_path], env={"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for part in flow_experiments.PARTS:
        quick, committed = json.loads((tmp_path / f"{part}.json").read_text()), record(part)
        assert set(quick) == set(committed), part
        assert set(quick["results"]) <= set(committed["results"]), part
        rows = quick["results"]["kl"] if part == "toy" else quick["results"]
        reference = committed["results"]["kl"] if part == "toy" else committed["results"]
        for name, values in rows.items():
            if name in ("paired_with_gaussian", "paired"):  # the quick run pairs fewer rows
                assert set(values) <= set(reference[name]), (part, name)
            elif isinstance(values, dict) and name not in ("model", "paper_test_nll"):
                assert set(values) == set(reference[name]), (part, name)
    again = run_python(
        ["scripts/flow_experiments.py", "--quick", "--if-stale", "--output-dir", tmp_path],
        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)},
    )
    assert again.returncode == 0 and "nothing to run" in again.stdout
    figures = run_python(["scripts/plot_flows.py", "--results-dir", tmp_path, "--output-dir", tmp_path / "images"])
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert all((tmp_path / "images" / name).stat().st_size > 1000 for name in plot_flows.FIGURES)


def test_a_changed_flow_layer_moves_the_fingerprint_of_the_toy_part(monkeypatch, tmp_path):
    """Behaviour, not source text: a planar flow with a wrong log-determinant (patched in) moves the toy part's
    fingerprint (the reverse KLs it reports) away from the committed one."""
    import fingerprint
    import flows

    class PlanarFlow(flows.PlanarFlow):  # the same map with its log-determinant off by one nat
        def call(self, inputs):
            z, log_det = super().call(inputs)
            return [z, log_det + 1.0]

    monkeypatch.setattr(fingerprint, "CACHE_DIR", tmp_path)  # the cache is keyed by source, which is unchanged
    monkeypatch.setattr(flows, "PlanarFlow", PlanarFlow)
    settings = {**flow_experiments.FINGERPRINT["toy"], "targets": ["U1"], "flows": {"planar": [2]}}
    moved = provenance.part_fingerprint("flows", "toy", settings, flow_experiments.run_part)
    committed = record("toy")["fingerprint"]
    assert fingerprint.differences({k: v for k, v in committed.items() if k in moved}, moved)


def test_the_fingerprint_probes_the_planar_flow_where_no_fitted_flow_goes(monkeypatch):
    """No fitted flow has |w|^2 below u_hat's 1e-12 floor, so the runs never reach it; the probe does: the
    committed probe numbers are today's, and a planar flow with another floor (patched in) moves them."""
    import types

    import fingerprint
    import flows

    committed = {k: v for k, v in record("toy")["fingerprint"].items() if k.startswith("probe.")}
    assert committed and not fingerprint.differences(
        committed, fingerprint.numbers({"probe": flow_experiments.planar_probe()})
    )
    changed = types.ModuleType("flows_with_another_floor")
    source = pathlib.Path(flows.__file__).read_text().replace("1e-12", "1e-16")
    registered = keras.saving.get_custom_objects()  # the copy registers its layers: keep the originals
    originals = dict(registered)
    try:
        exec(compile(source, flows.__file__, "exec"), changed.__dict__)
    finally:
        registered.clear()
        registered.update(originals)
    monkeypatch.setattr(flows, "PlanarFlow", changed.PlanarFlow)
    moved = fingerprint.numbers({"probe": flow_experiments.planar_probe()})
    assert fingerprint.differences(committed, moved)


@pytest.mark.slow
def test_flow_figures_redraw_from_the_committed_results(tmp_path):
    assert_figures_current("scripts/plot_flows.py", plot_flows.OUTPUT_DIR, plot_flows.FIGURES, tmp_path)


@full_mnist
def test_every_part_matches_its_inputs():
    # Last in the module: the quick run (the fingerprint's own run) has left today's fingerprints in the cache.
    assert_parts_current(flow_experiments)
