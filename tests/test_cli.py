"""Every command-line program runs: --help, a tiny real run, and bad input.

Like Pyro's test_examples.py: the list below must name every listing and
script, so a new program without a test fails here.
"""

import concurrent.futures
import json
import pathlib
import re

import pytest

from conftest import MNIST_SUBSET_DIR, REPO_ROOT, run_python

PROGRAMS = [
    "listings/vae/mnist_data.py",
    "listings/vae/variational_autoencoder.py",
    "listings/vae/variational_autoencoder_classic.py",
    "listings/vae/train.py",
    "listings/vae/visualize.py",
    "listings/vae/log_likelihood.py",
    "listings/vae/importance_weighted.py",
    "listings/vae/objectives.py",
    "listings/vae/kl_divergence.py",
    "listings/vae/discriminator.py",
    "listings/vae/outputs.py",
    "listings/vae/checkpoints.py",
    "listings/vae/avb.py",
    "listings/vae/flows.py",
    "listings/vae/iaf.py",
    "listings/vae/flow_densities.py",
    "listings/vae/likelihoods.py",
    "listings/vae/skeleton.py",
    "listings/vae/compose.py",
    "listings/vae/training.py",
    "listings/vae/convolutional.py",
    "listings/vae/keras_io_conv_vae.py",
    "listings/vae/posterior_collapse.py",
    "listings/vae/gradients.py",
    "listings/vae/distributed.py",
    "scripts/distributed_experiments.py",
    "scripts/plot_distributed.py",
    "scripts/make_diagrams.py",
    "scripts/make_generated.py",
    "scripts/make_mnist_subset.py",
    "scripts/train_main_post.py",
    "scripts/plot_main_post.py",
    "scripts/export_explorer.py",
    "scripts/make_notebooks.py",
    "scripts/collapse_diagnostics.py",
    "scripts/benchmark.py",
    "scripts/plot_benchmark.py",
    "scripts/train_iwae_table.py",
    "scripts/mc_samples_experiments.py",
    "scripts/plot_iwae.py",
    "scripts/avb_experiments.py",
    "scripts/plot_avb.py",
    "scripts/flow_experiments.py",
    "scripts/plot_flows.py",
    "scripts/likelihood_experiments.py",
    "scripts/plot_likelihoods.py",
    "scripts/composition_experiments.py",
    "scripts/conv_experiments.py",
    "scripts/plot_conv.py",
    "scripts/kl_weight_experiments.py",
    "scripts/plot_kl_weight.py",
    "scripts/gradient_experiments.py",
    "scripts/plot_gradients.py",
    "scripts/claims.py",
    "scripts/seeds.py",
]
# Imported by the scripts; no command line of their own.
LIBRARY_MODULES = {
    "scripts/provenance.py",
    "scripts/fingerprint.py",
    "scripts/torch_reference.py",
    "scripts/epoch_timer.py",
    "scripts/stage_scores.py",
}
SUBSET = {"MNIST_DIR": str(MNIST_SUBSET_DIR)}


def test_every_program_is_listed():
    found = {str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("listings/**/*.py")}
    found |= {str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("scripts/*.py")}
    assert found - LIBRARY_MODULES == set(PROGRAMS)


def run_two_at_a_time(commands):
    """``{key: CompletedProcess}`` for ``{key: (args, env)}``, two subprocesses at a time (the machine has two
    cores; each mostly waits on its own TensorFlow import)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run_python, args, env) for key, (args, env) in commands.items()}
        return {key: future.result() for key, future in futures.items()}


def selected_params(request, test_name, param):
    """The values of ``param`` in the session's selected items of ``test_name`` (so ``-k`` runs only those)."""
    items = [item for item in request.session.items if getattr(item, "originalname", None) == test_name]
    return [item.callspec.params[param] for item in items]


@pytest.fixture(scope="module")
def help_results(request):
    programs = selected_params(request, "test_help", "program")
    return run_two_at_a_time({program: ([program, "--help"], None) for program in programs})


@pytest.mark.parametrize("program", PROGRAMS, ids=[pathlib.Path(p).stem for p in PROGRAMS])
def test_help(program, help_results):
    result = help_results[program]
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


# TensorFlow's C++ runtime prints these on every import, before any code of
# ours runs (TF_CPP_MIN_LOG_LEVEL does not silence them in TF 2.21); they are
# not part of a program's error report.
TENSORFLOW_BANNER = re.compile(
    r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following instructions)"
)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not TENSORFLOW_BANNER.match(line)]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_output(tmp_path_factory):
    """One epoch of the training CLI on the committed subset."""
    output_dir = tmp_path_factory.mktemp("train")
    result = run_python(
        ["listings/vae/train.py", "--num-epochs", "1", "--mc-samples", "3", "--output-dir", output_dir, "--quiet"],
        env=SUBSET,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return output_dir, result


def test_train_cli_writes_model_and_history(trained_output):
    output_dir, result = trained_output
    history = json.loads((output_dir / "history.json").read_text())
    assert set(history) == {"loss", "val_loss"} and len(history["loss"]) == 1
    assert 100 < history["val_loss"][0] < 600  # nats per 784-pixel image
    assert (output_dir / "vae.keras").is_file()
    assert "test negative ELBO" in result.stdout


def test_visualize_cli_draws_from_saved_model(trained_output, tmp_path):
    output_dir, _ = trained_output
    result = run_python(
        ["listings/vae/visualize.py", "--model", output_dir / "vae.keras", "--output-dir", tmp_path], env=SUBSET
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "latent_space.png").stat().st_size > 1000
    assert (tmp_path / "manifold.png").stat().st_size > 1000


# Bad input: (program, args, environment, fragments the one-line error must contain).
BAD_INPUTS = [
    ("listings/vae/train.py", ["--mc-samples", "0"], SUBSET, ["mc_samples=0", "positive integer"]),
    ("listings/vae/train.py", ["--latent-dim", "0"], SUBSET, ["latent_dim=0"]),
    ("listings/vae/train.py", ["--num-epochs", "0"], SUBSET, ["num_epochs=0"]),
    ("listings/vae/train.py", [], {"MNIST_DIR": "/nonexistent/mnist"}, ["MNIST folder not found"]),
    ("listings/vae/variational_autoencoder.py", ["--latent-dim", "-1"], {}, ["latent_dim=-1"]),
    ("listings/vae/variational_autoencoder_classic.py", [], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder"]),
    ("listings/vae/visualize.py", ["--model", "/nonexistent.keras"], SUBSET, ["Model file not found"]),
    ("scripts/train_main_post.py", [], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder not found"]),
    ("scripts/train_main_post.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/benchmark.py", ["--repeats", "0"], SUBSET, ["repeats=0", "--repeats >= 1"]),
    ("listings/vae/log_likelihood.py", ["--model", "/nonexistent.keras"], SUBSET, ["Model file not found"]),
    ("listings/vae/log_likelihood.py", ["--model", "x.keras", "--num-samples", "0"], SUBSET, ["num_samples=0"]),
    ("scripts/benchmark.py", ["--check", "--output", "/nonexistent.json"], {}, ["not found", "benchmark.py"]),
    ("scripts/plot_benchmark.py", ["--results", "/nonexistent.json"], {}, ["missing input", "benchmark.py"]),
    ("listings/vae/importance_weighted.py", ["-k", "0"], SUBSET, ["k=0", "positive integer"]),
    ("listings/vae/importance_weighted.py", ["--stages", "0"], SUBSET, ["stages=0"]),
    ("listings/vae/importance_weighted.py", [], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder not found"]),
    ("scripts/train_iwae_table.py", ["--rows", "vae-k2"], SUBSET, ["unknown rows", "iwae-k50"]),
    ("scripts/train_iwae_table.py", ["--stages", "0"], SUBSET, ["--stages >= 1"]),
    ("scripts/mc_samples_experiments.py", ["--table-dir", "/nonexistent"], SUBSET, ["Missing input"]),
    ("scripts/plot_iwae.py", ["--experiments", "/nonexistent.json"], {}, ["run mc_samples_experiments.py"]),
    ("listings/vae/kl_divergence.py", ["--samples", "0"], {}, ["samples=0", "positive integer"]),
    ("listings/vae/discriminator.py", ["--latent-dim", "0"], {}, ["latent_dim=0", "positive integer"]),
    ("listings/vae/outputs.py", ["--output-dir", "/proc/vae-output"], {}, ["/proc/vae-output", "not writable"]),
    ("scripts/train_iwae_table.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/mc_samples_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output"]),
    ("scripts/train_iwae_table.py", ["--stages", "2", "--paper-schedule"], SUBSET, ["not both"]),
    ("listings/vae/avb.py", ["--divergence", "kde"], SUBSET, ["Expected `divergence` to be one of", "='kde'"]),
    (
        "listings/vae/avb.py",
        ["--divergence", "monte_carlo", "--posterior", "implicit"],
        SUBSET,
        ["only a discriminator can estimate"],
    ),
    ("listings/vae/avb.py", ["--epochs", "0"], SUBSET, ["epochs=0"]),
    ("listings/vae/avb.py", [], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder not found"]),
    ("scripts/avb_experiments.py", ["--parts", "gan"], SUBSET, ["unknown parts", "estimators, toy, mnist"]),
    ("scripts/avb_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/avb_experiments.py", ["--parts", "mnist"], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder"]),
    ("scripts/plot_avb.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "avb_experiments.py"]),
    ("listings/vae/flows.py", ["--num-flows", "-1"], SUBSET, ["num_flows=-1", "non-negative integer"]),
    ("listings/vae/flows.py", ["--num-test", "0"], SUBSET, ["num_test=0"]),
    ("listings/vae/iaf.py", ["--latent-dim", "0"], {}, ["latent_dim=0", "positive integer"]),
    ("listings/vae/flows.py", [], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder not found"]),
    ("listings/vae/flow_densities.py", ["--num-flows", "-2"], {}, ["num_flows=-2"]),
    ("listings/vae/flow_densities.py", ["--steps", "0"], {}, ["steps=0", "positive integer"]),
    ("scripts/flow_experiments.py", ["--parts", "nice"], SUBSET, ["unknown parts", "toy, mnist, cost"]),
    ("scripts/flow_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/flow_experiments.py", ["--parts", "mnist"], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder"]),
    ("scripts/plot_flows.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "flow_experiments.py"]),
    ("listings/vae/skeleton.py", ["--epochs", "0"], {}, ["epochs=0", "positive integer"]),
    ("listings/vae/skeleton.py", ["--samples", "-3"], {}, ["samples=-3"]),
    (
        "listings/vae/compose.py",
        ["--posterior", "iaf", "--divergence", "closed_form"],
        {},
        ["divergence='closed_form' needs a Gaussian posterior", "iaf posterior"],
    ),
    ("listings/vae/compose.py", ["--objective", "iwae", "--divergence", "adversarial"], {}, ["objective='iwae'"]),
    ("listings/vae/compose.py", ["--encoder", "conv", "--posterior", "implicit"], {}, ["encoder='conv'", "implicit"]),
    ("listings/vae/compose.py", ["--objective", "iwae", "--kl-weight", "2"], {}, ["kl_weight=1", "kl_weight=2.0"]),
    ("listings/vae/training.py", ["--epochs", "0"], {}, ["epochs=0", "positive integer"]),
    ("listings/vae/training.py", ["--objective", "elbow"], {}, ["objective='elbow'", "one of ('elbo', 'iwae')"]),
    (
        "scripts/likelihood_experiments.py",
        ["--parts", "poisson"],
        SUBSET,
        ["unknown parts", "mnist, regression, classification"],
    ),
    ("scripts/likelihood_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/likelihood_experiments.py", ["--parts", "mnist"], {"MNIST_DIR": "/nonexistent"}, ["MNIST folder"]),
    ("scripts/conv_experiments.py", ["--parts", "cifar"], SUBSET, ["unknown parts", "mnist, fashion_mnist"]),
    ("scripts/conv_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/plot_conv.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "conv_experiments.py"]),
    ("scripts/kl_weight_experiments.py", ["--parts", "gamma"], SUBSET, ["unknown parts", "beta, warmup"]),
    ("scripts/kl_weight_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/plot_kl_weight.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "kl_weight_experiments"]),
    (
        "scripts/conv_experiments.py",
        ["--parts", "fashion_mnist"],
        {"FASHION_MNIST_DIR": "/nonexistent"},
        ["Fashion-MNIST folder not found: /nonexistent"],
    ),
    (
        "scripts/plot_likelihoods.py",
        ["--results-dir", "/nonexistent"],
        {},
        ["missing input", "likelihood_experiments.py"],
    ),
    ("scripts/composition_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/composition_experiments.py", ["--parts", "vae"], SUBSET, ["unknown parts", "iaf_iwae_cb"]),
    ("listings/vae/checkpoints.py", ["/nonexistent.npz"], {}, ["No checkpoint", "/nonexistent.npz"]),
    ("listings/vae/train.py", ["--checkpoint-every", "-1"], SUBSET, ["--checkpoint-every", "integer >= 1"]),
    ("scripts/claims.py", ["--claims", "/nonexistent.toml"], {}, ["Could not read", "/nonexistent.toml"]),
    ("scripts/seeds.py", ["--studies", "vae"], {}, ["unknown studies", "iwae"]),
    ("scripts/seeds.py", ["--output-dir", REPO_ROOT / "README.md"], {}, ["README.md is a file"]),
    ("scripts/train_iwae_table.py", ["--seed", "1"], {}, ["--seed 1 needs an --output-dir"]),
    (
        "scripts/likelihood_experiments.py",
        ["--parts", "classification", "--seed", "1"],
        {},
        ["--seed needs an --output-dir"],
    ),
    (
        "scripts/flow_experiments.py",
        ["--parts", "cost", "--seed", "1", "--output-dir", "x"],
        {},
        ["parts with a seed", "cost"],
    ),
    ("scripts/export_explorer.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "train_main_post.py"]),
    (
        "scripts/export_explorer.py",
        ["--results-dir", REPO_ROOT / "results" / "iwae" / "iwae-k1"],
        SUBSET,
        ["Expected a model of train.py", "vae_gaussian_monte_carlo_bernoulli_iwae"],
    ),
    ("scripts/make_notebooks.py", ["--output-dir", REPO_ROOT / "README.md"], {}, ["README.md is a file"]),
    ("listings/vae/mnist_data.py", ["--dataset", "kmnist"], {}, ["dataset='kmnist'", "'fashion_mnist'"]),
    ("listings/vae/convolutional.py", ["--likelihood", "categorical"], {}, ["likelihood='categorical'"]),
    ("listings/vae/keras_io_conv_vae.py", ["--epochs", "0"], SUBSET, ["epochs=0", "positive integer"]),
    ("listings/vae/posterior_collapse.py", ["--model", "/nonexistent.keras"], SUBSET, ["Model file not found"]),
    ("listings/vae/posterior_collapse.py", ["--model", "vae.keras", "--num-examples", "1"], SUBSET,
     ["num_examples=1", ">= 2 (a variance)"]),  # fmt: skip
    ("scripts/collapse_diagnostics.py", ["--output", REPO_ROOT / "README.md" / "x.json"], {}, ["README.md is a file"]),
    ("listings/vae/keras_io_conv_vae.py", ["--dataset", "kmnist"], SUBSET, ["dataset='kmnist'"]),
    ("scripts/make_mnist_subset.py", ["--dataset", "emnist", "--output", "x"], {}, ["dataset='emnist'"]),
    (
        "scripts/make_mnist_subset.py",
        ["--dataset", "fashion_mnist", "--num-test", "10"],
        {},
        ["fashion-mnist holds the committed test subset"],
    ),
    ("listings/vae/gradients.py", ["--draws", "1"], {}, ["--draws to be at least 2", "received 1"]),
    ("listings/vae/compose.py", ["--objective", "iwae", "--gradient", "stl"], {}, ["gradient='stl'", "dreg"]),
    ("listings/vae/training.py", ["--gradient", "dreg"], {}, ["gradient='dreg'", "objective='elbo'"]),
    ("scripts/gradient_experiments.py", ["--parts", "hessian"], SUBSET, ["unknown parts", "spread, training"]),
    ("scripts/gradient_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/plot_gradients.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "gradient_experiments"]),
    ("listings/vae/importance_weighted.py", ["--data-parallel", "2"], {**SUBSET, "KERAS_BACKEND": "tensorflow"},
     ["KERAS_BACKEND=jax", "Received: tensorflow"]),
    ("listings/vae/importance_weighted.py", ["--processes", "0"], SUBSET, ["--processes to be a positive integer"]),
    ("listings/vae/importance_weighted.py", ["--data-parallel", "3"], {**SUBSET, "KERAS_BACKEND": "jax"},
     ["divisible by 3", "batch size 20"]),
    ("listings/vae/distributed.py", ["--steps", "0"], {}, ["--steps to be a positive integer"]),
    ("scripts/distributed_experiments.py", ["--quick"], SUBSET, ["--quick needs an --output-dir"]),
    ("scripts/plot_distributed.py", ["--results-dir", "/nonexistent"], {}, ["missing input", "distributed_experiments"]),
]
BAD_INPUT_IDS = [
    "train-mc-samples-0",
    "train-latent-dim-0",
    "train-epochs-0",
    "train-missing-mnist-dir",
    "model-latent-dim-negative",
    "classic-missing-mnist-dir",
    "visualize-missing-model",
    "results-missing-mnist-dir",
    "main-post-quick-over-committed",
    "benchmark-repeats-0",
    "log-likelihood-missing-model",
    "log-likelihood-k-0",
    "benchmark-check-missing-results",
    "plot-benchmark-missing-results",
    "iwae-k-0",
    "iwae-stages-0",
    "iwae-missing-mnist-dir",
    "table-unknown-row",
    "table-stages-0",
    "experiments-missing-models",
    "plot-iwae-missing-results",
    "kl-samples-0",
    "discriminator-latent-dim-0",
    "outputs-not-writable",
    "table-quick-over-committed",
    "experiments-quick-over-committed",
    "table-stages-and-paper-schedule",
    "avb-unknown-divergence",
    "avb-implicit-without-adversary",
    "avb-epochs-0",
    "avb-missing-mnist-dir",
    "avb-experiments-unknown-part",
    "avb-experiments-quick-over-committed",
    "avb-experiments-missing-mnist",
    "plot-avb-missing-results",
    "flows-k-negative",
    "flows-num-test-0",
    "iaf-latent-dim-0",
    "flows-missing-mnist-dir",
    "flow-densities-k-negative",
    "flow-densities-steps-0",
    "flow-experiments-unknown-part",
    "flow-experiments-quick-over-committed",
    "flow-experiments-missing-mnist",
    "plot-flows-missing-results",
    "skeleton-epochs-0",
    "skeleton-samples-negative",
    "compose-closed-form-kl-of-a-flow",
    "compose-iwae-with-an-estimated-ratio",
    "compose-conv-encoder-of-an-implicit-posterior",
    "compose-iwae-with-a-kl-weight",
    "training-epochs-0",
    "training-unknown-objective",
    "likelihood-experiments-unknown-part",
    "likelihood-experiments-quick-over-committed",
    "likelihood-experiments-missing-mnist",
    "conv-experiments-unknown-part",
    "conv-experiments-quick-over-committed",
    "conv-experiments-missing-fashion-mnist",
    "plot-conv-missing-results",
    "kl-weight-experiments-unknown-part",
    "kl-weight-experiments-quick-over-committed",
    "plot-kl-weight-missing-results",
    "plot-likelihoods-missing-results",
    "composition-experiments-quick-over-committed",
    "composition-experiments-unknown-part",
    "checkpoints-missing-file",
    "train-checkpoint-every-negative",
    "claims-missing-file",
    "seeds-unknown-study",
    "seeds-output-dir-a-file",
    "iwae-table-seed-over-committed",
    "likelihood-experiments-seed-over-committed",
    "flow-experiments-seed-of-timing-part",
    "export-explorer-missing-model",
    "export-explorer-not-the-main-post-model",
    "make-notebooks-output-dir-a-file",
    "mnist-data-unknown-dataset",
    "convolutional-categorical-pixels",
    "keras-io-vae-epochs-0",
    "collapse-missing-model",
    "collapse-one-example",
    "collapse-diagnostics-output-in-a-file",
    "keras-io-vae-unknown-dataset",
    "mnist-subset-unknown-dataset",
    "mnist-subset-over-the-committed-fashion-subset",
    "gradients-draws-1",
    "compose-stl-on-the-iwae-bound",
    "training-dreg-on-the-elbo",
    "gradient-experiments-unknown-part",
    "gradient-experiments-quick-over-committed",
    "plot-gradients-missing-results",
    "iwae-data-parallel-on-tensorflow",
    "iwae-processes-0",
    "iwae-batch-not-divisible",
    "distributed-steps-0",
    "distributed-experiments-quick-over-committed",
    "plot-distributed-missing-results",
]
# Programs that write files get an --output-dir of their own.
WRITERS = ("train.py", "importance_weighted.py", "avb.py", "flows.py", "export_explorer.py")


# Every bad input runs in this process: ``main(argv)`` of the program's module, with its environment
# set, its exit code and its standard error captured. A traceback would be an exception escaping main, and
# fails the test. A sample of the cases also runs as real subprocesses (below), to show that each
# program's entry point turns that exit into the process's exit status with nothing else on stderr.
SUBPROCESS_SAMPLE = [
    "train-mc-samples-0",
    "avb-missing-mnist-dir",
    "benchmark-repeats-0",
    "flow-experiments-quick-over-committed",
    "training-unknown-objective",
]


def run_main_in_process(program, args, env, monkeypatch, capsys):
    """``main(args)`` of ``program``'s module, as ``python program args`` would run it: a CompletedProcess-like
    result with its exit code and standard error."""
    import importlib
    import types

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = importlib.import_module(pathlib.Path(program).stem)
    capsys.readouterr()
    try:
        code = module.main([str(arg) for arg in args])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return types.SimpleNamespace(returncode=code if isinstance(code, int) else 1, stderr=captured.err)


def bad_input_command(case_id, program, args, tmp_path):
    output = ["--output-dir", tmp_path / case_id] if program.endswith(WRITERS) else []
    return [*args, *output]


@pytest.mark.parametrize("case", list(zip(BAD_INPUT_IDS, BAD_INPUTS, strict=True)), ids=BAD_INPUT_IDS)
def test_bad_input_gives_one_line_error(case, tmp_path, monkeypatch, capsys):
    case_id, (program, args, env, fragments) = case
    result = run_main_in_process(program, bad_input_command(case_id, program, args, tmp_path), env, monkeypatch,
                                 capsys)  # fmt: skip
    assert_one_line_error(result, *fragments)


@pytest.fixture(scope="module")
def bad_input_subprocesses(request, tmp_path_factory):
    cases = dict(zip(BAD_INPUT_IDS, BAD_INPUTS, strict=True))
    commands = {}
    for case_id in selected_params(request, "test_bad_input_exits_with_one_line_as_a_process", "case_id"):
        program, args, env, _ = cases[case_id]
        commands[case_id] = ([program, *bad_input_command(case_id, program, args, tmp_path_factory.mktemp("bad"))],
                             env)  # fmt: skip
    return run_two_at_a_time(commands)


@pytest.mark.parametrize("case_id", SUBPROCESS_SAMPLE)
def test_bad_input_exits_with_one_line_as_a_process(case_id, bad_input_subprocesses):
    fragments = dict(zip(BAD_INPUT_IDS, BAD_INPUTS, strict=True))[case_id][3]
    assert_one_line_error(bad_input_subprocesses[case_id], *fragments)


def test_log_likelihood_cli_refuses_a_model_that_is_not_ours(tmp_path):
    import keras

    inputs = keras.Input((784,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "other.keras")
    (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    for name, fragment in (("other.keras", "Expected a model from `compose_vae`"), ("corrupt.keras", "Could not load")):
        result = run_python(["listings/vae/log_likelihood.py", "--model", tmp_path / name], env=SUBSET)
        assert_one_line_error(result, fragment)


def test_importance_weighted_cli_trains_and_its_model_is_estimated(tmp_path):
    result = run_python(
        ["listings/vae/importance_weighted.py", "--objective", "iwae", "-k", "3", "--stages", "1",
         "--batch-size", "100", "--output-dir", tmp_path, "--quiet"],
        env=SUBSET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train negative iwae (k = 3)" in result.stdout
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["loss"]) == 1 and 100 < history["val_loss"][0] < 600
    estimate = run_python(
        ["listings/vae/log_likelihood.py", "--model", tmp_path / "vae.keras", "--num-samples", "20",
         "--num-examples", "10", "--quiet", "--output", tmp_path / "ll.json"],
        env=SUBSET,
    )  # fmt: skip
    assert estimate.returncode == 0, estimate.stderr[-2000:]
    record = json.loads((tmp_path / "ll.json").read_text())
    assert record["num_examples"] == 10 and record["num_samples"] == 20
    # After one epoch on 1,000 images: far better than chance (784 log 2 = 543 nats), far from perfect.
    assert -543 < record["log_likelihood"] < -100, record
    assert 0 < record["monte_carlo_stderr"] < record["stderr_over_examples"]
    assert "test log-likelihood" in estimate.stdout


def test_avb_cli_trains_an_implicit_posterior_and_saves_it(tmp_path):
    result = run_python(
        ["listings/vae/avb.py", "--divergence", "adversarial", "--posterior", "implicit", "--epochs", "1",
         "--latent-dim", "2", "--output-dir", tmp_path, "--quiet"],
        env=SUBSET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test rate:" in result.stdout and "test rate_exact" not in result.stdout
    negative_elbo = float(re.search(r"test negative ELBO \(with rate\): ([\d.]+) nats", result.stdout)[1])
    assert 100 < negative_elbo < 600
    assert len(json.loads((tmp_path / "history.json").read_text())["loss"]) == 1
    assert (tmp_path / "vae.keras").is_file()


def test_flows_cli_trains_an_iaf_posterior_and_estimates_it(tmp_path):
    result = run_python(
        ["listings/vae/flows.py", "--flow", "iaf", "--num-flows", "2", "--epochs", "1", "--num-test", "20",
         "--num-samples", "20", "--output-dir", tmp_path, "--quiet"],
        env=SUBSET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    log_likelihood = float(re.search(r"test log-likelihood (-[\d.]+) nats", result.stdout)[1])
    assert -543 < log_likelihood < -100  # better than chance (784 log 2) after one epoch on 1,000 images
    assert len(json.loads((tmp_path / "history.json").read_text())["loss"]) == 1
    assert (tmp_path / "vae.keras").is_file()


def test_flow_densities_cli_fits_a_flow():
    result = run_python(["listings/vae/flow_densities.py", "--target", "U2", "--num-flows", "2", "--steps", "200",
                         "--quiet"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    kl = float(re.search(r"KL\[q \|\| p\] = ([\d.]+) nats", result.stdout)[1])
    assert 0 < kl < 5


def test_skeleton_cli_trains_a_bayesian_classifier():
    result = run_python(["listings/vae/skeleton.py", "--task", "digits", "--epochs", "3", "--samples", "50"])
    assert result.returncode == 0, result.stderr[-2000:]
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", result.stdout)[1])
    assert accuracy > 0.8  # chance is 0.1


def test_the_keras_io_baseline_trains_and_lowers_its_loss():
    """keras.io's convolutional VAE as we wrote it: three epochs on the MNIST subset's 1,200 images lower its
    loss from about 784 log 2 = 543 nats (grey levels: the cross-entropy of a blank guess) by a wide margin."""
    result = run_python(["listings/vae/keras_io_conv_vae.py", "--epochs", "3", "--seed", "0"], env=SUBSET)
    assert result.returncode == 0, result.stderr[-2000:]
    losses = [float(value) for value in re.findall(r" - loss: ([\d.]+)", result.stdout)]
    assert len(losses) == 3 and losses[-1] < losses[0] - 100, losses
    assert "last epoch: loss" in result.stdout


def test_the_keras_io_baseline_says_it_needs_tensorflow():
    result = run_python(["listings/vae/keras_io_conv_vae.py", "--epochs", "1"], env={**SUBSET, "KERAS_BACKEND": "jax"})
    assert_one_line_error(result, "tf.GradientTape: KERAS_BACKEND=tensorflow. Received: jax")
