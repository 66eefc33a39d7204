"""Regenerate what the site shows that is stale, in one process (what ``make site`` runs first).

Draws the diagrams and figures and retrains the main post's model when their
records are stale; the long measurements (the benchmark and the IWAE, AVB,
flows and likelihoods experiments) are only checked, and a stale one gets one
warning line naming the ``make`` target that reruns it. One process serves
every check, so the fingerprints of an up-to-date checkout come from the
cache (``cache/fingerprints``) without TensorFlow being imported at all.
Prints one line per artefact written, and one line when all is current.
"""

import argparse
import contextlib
import importlib
import io
import os
import pathlib
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# (script, make target that reruns it when stale, or None: regenerated here[, its other arguments]). In
# dependency order.
STEPS = [
    ("make_diagrams", None),
    ("train_main_post", None),
    ("plot_main_post", None),
    ("export_explorer", None),
    ("benchmark", "make benchmark"),
    ("plot_benchmark", None),
    ("train_iwae_table", "make iwae"),
    ("train_iwae_table", "make iwae-long", ["--output-dir", "results/iwae-long"]),  # the rows recorded so far
    ("mc_samples_experiments", "make iwae"),
    ("plot_iwae", None),
    ("avb_experiments", "make avb"),
    ("plot_avb", None),
    ("flow_experiments", "make flows"),
    ("plot_flows", None),
    ("likelihood_experiments", "make likelihoods"),
    ("plot_likelihoods", None),
    ("composition_experiments", "make composition"),
    ("kl_weight_experiments", "make kl-weight"),
    ("plot_kl_weight", None),
    ("conv_experiments", "make conv"),
    ("plot_conv", None),
    ("gradient_experiments", "make gradients"),
    ("plot_gradients", None),
    ("distributed_experiments", "make distributed"),
    ("plot_distributed", None),
    ("seeds", None),
    ("collapse_diagnostics", None),
    ("make_notebooks", None),  # last: the notebooks carry the numbers the steps above record
]


class QuietLines(io.TextIOBase):
    """Passes lines through as they come, except those saying that something is current."""

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if " is current" not in line:
                self.stream.write(line + "\n")
                self.stream.flush()
        return len(text)

    def flush(self):
        if self.pending and " is current" not in self.pending:
            self.stream.write(self.pending)
        self.pending = ""
        self.stream.flush()


def run_step(name, target, arguments=()):
    """Run one script's ``main``; return ``(exit code, its error output)``."""
    module = importlib.import_module(name)
    argv = ["--check" if target else "--if-stale", *arguments]
    errors = io.StringIO()
    sys.argv[0] = f"{name}.py"  # how the script names itself in its messages
    quiet = QuietLines(sys.stdout)
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(errors):
            code = module.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        quiet.flush()
    return code or 0, errors.getvalue().strip()


@contextlib.contextmanager
def native_stderr_to(path):
    """Send what native code (TensorFlow's C++ start-up banners) writes to file descriptor 2 to ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    start = time.perf_counter()
    failed = stale = 0
    with tempfile.TemporaryDirectory() as scratch:
        native_log = pathlib.Path(scratch) / "native.log"
        with native_stderr_to(native_log):
            for name, target, *arguments in STEPS:
                try:
                    code, errors = run_step(name, target, *arguments)
                except Exception as error:  # a crash in one script: one line, and the native log's tail below
                    code, errors = 1, f"{name}.py: {type(error).__name__}: {error}"
                last = errors.splitlines()[-1] if errors else ""
                if target and code == 1:
                    stale += 1
                    print(f"warning: {last} (the site shows the committed numbers; run {target})", flush=True)
                elif code:
                    failed += 1
                    print(f"error: {last or f'{name}.py failed with exit code {code}'}", flush=True)
                    break
        native = native_log.read_text(errors="replace").strip().splitlines()
    if failed:
        if native:
            print("native error output, last lines:", *native[-5:], sep="\n  ", file=sys.stderr)
        return 1
    if not stale:
        print(f"every generated artefact is current ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
