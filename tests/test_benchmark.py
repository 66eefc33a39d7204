"""The benchmark's FLOP counter, its quick mode, and the fast training core's equivalence.

No timing is asserted here: speed is measured by scripts/benchmark.py.
"""

import json

import numpy as np
import pytest

from benchmark import matmul_shapes, training_step_flops
from conftest import MNIST_SUBSET_DIR, run_python
from train import train_vae

TINY = {"original_dim": 3, "intermediate_dim": 4, "latent_dim": 2, "hidden_layers": 1, "activation": "relu"}


def test_flop_counter_matches_a_hand_count():
    # Batch 5, 2 Monte Carlo samples, 3-4-2 encoder (two heads), 2-4-3 decoder.
    # encoder 3->4, rows 5: forward 2*5*3*4 = 120, weight gradient 120, no input gradient
    # two heads 4->2, rows 5: 3 products of 2*5*4*2 = 80 each, twice      = 480
    # decoder 2->4, rows 10: 3 products of 2*10*2*4 = 160                  = 480
    # decoder 4->3, rows 10: 3 products of 2*10*4*3 = 240                  = 720
    assert training_step_flops(TINY, batch_size=5, mc_samples=2) == 240 + 480 + 480 + 720
    assert len(matmul_shapes(TINY, 5, 2)) == 2 + 3 + 3 + 3 + 3


def test_flops_grow_only_in_the_decoder_with_mc_samples():
    one, five = (training_step_flops("784-200-200-50", 100, s) for s in (1, 5))
    decoder_one = sum(2 * m * k * n for m, k, n in matmul_shapes("784-200-200-50", 100, 1)[-9:])
    assert five - one == 4 * decoder_one


@pytest.mark.slow
def test_benchmark_quick_mode_writes_a_well_formed_results_file(tmp_path):
    output = tmp_path / "benchmark.json"
    result = run_python(
        ["scripts/benchmark.py", "--quick", "--output", output], env={"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(output.read_text())
    assert results["settings"]["quick"] is True and results["settings"]["num_examples"] == 1000
    for name, architecture in results["architectures"].items():
        configs = architecture["configs"]
        assert {"ours-S1", "ours-S5", "ours-S25", "torch-S1", "ours-S1-step-only", "pipeline-only"} <= set(configs)
        assert ("classic" in configs) == (name == "784-256-2")
        for config, summary in configs.items():
            if "skipped" in summary:
                assert config.startswith("torch") and summary["skipped"] == "torch not installed"
                continue
            assert summary["seconds_per_epoch_min"] <= summary["seconds_per_epoch"] <= summary["seconds_per_epoch_max"]
            assert summary["examples_per_second"] > 0 and summary["peak_memory_mib"] > 0
            assert summary["cpu_seconds_per_epoch"] > 0
        limit = architecture["machine_limit"]["S1"]
        assert limit["ideal_seconds_per_epoch"] > 0 and limit["numpy_gflops_per_second"] > 0
    assert "ours_s1_over_classic" in results["ratios"]
    assert results["versions"]["keras"] and results["machine"]
    # Every target whose ratio was measured carries its verdict.
    for name, target in results["targets"].items():
        assert target["measured"] == results["ratios"][name]
        assert target["verdict"] in {"met", "not met"} and target["target"].split()[0] in {"<", "<=", ">="}
    assert {"binarisation_share_784_256_2", "step_share_784_200_200_50", "binarisation_cpu_share_784_256_2"} <= set(
        results["ratios"]
    )
    # The FLOP ratio needs no timing: S = 25 repeats the decoder's work 25 times.
    assert results["ratios"]["flops_s25_over_s1_784_256_2"] == training_step_flops(
        "784-256-2", 100, 25
    ) / training_step_flops("784-256-2", 100, 1)
    # The record names the timed code: --check passes now and fails once an input hash differs.
    check = run_python(["scripts/benchmark.py", "--check", "--output", output])
    assert check.returncode == 0, check.stderr[-2000:]
    results["inputs"]["train.monte_carlo_batches"] = "0" * 64
    output.write_text(json.dumps(results))
    check = run_python(["scripts/benchmark.py", "--check", "--output", output])
    assert check.returncode == 1 and "stale (train.monte_carlo_batches)" in check.stderr


def test_fast_core_gives_the_same_loss_as_the_plain_one(mnist_subset):
    """XLA and several steps per call change how the step runs, not what it computes."""
    (x_train, _), (x_test, _) = mnist_subset
    histories = [
        train_vae(x_train, x_test, num_epochs=2, mc_samples=3, jit_compile=jit, steps_per_execution=spe, verbose=0)[3]
        for jit, spe in ((False, 1), (True, 50))
    ]
    plain, fast = histories
    np.testing.assert_allclose(fast["loss"], plain["loss"], rtol=1e-3)
    np.testing.assert_allclose(fast["val_loss"], plain["val_loss"], rtol=1e-3)
