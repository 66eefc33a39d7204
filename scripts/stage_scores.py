"""The test log-likelihood at the end of every stage of the IWAE paper's schedule: the learning curves."""

import json
import pathlib
import time

import keras

from log_likelihood import log_likelihood, summarise
from outputs import write_together


class StageScores(keras.callbacks.Callback):
    """A callback: the test NLL at the end of every stage of the schedule, written to ``path`` (JSON).

    ``{epochs: {"test_nll", "stderr_over_examples", "monte_carlo_stderr"}}``, scored as the table scores
    (``evaluation``: K importance samples, its seed) on ``x``, a fixed subset of the binarised test images.
    Scores up to ``first_epoch`` (a run going on from a checkpoint) are read back from ``path``; the
    seconds spent scoring are in ``seconds``. The scoring draws from its own generator, not the training's.
    """

    def __init__(self, path, x, stages, evaluation, first_epoch=0):
        super().__init__()
        self.path, self.x, self.evaluation, self.seconds = pathlib.Path(path), x, evaluation, 0.0
        self.stage_ends = {(3**stage - 1) // 2 for stage in range(1, stages + 1)}
        earlier = json.loads(self.path.read_text()) if first_epoch and self.path.is_file() else {}
        self.scores = {epochs: score for epochs, score in earlier.items() if int(epochs) <= first_epoch}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.stage_ends:
            return
        start = time.perf_counter()
        e = self.evaluation
        log_px, stderr = log_likelihood(self.model, self.x, "bernoulli", e["num_samples"], e["batch_size"], e["seed"],
                                        return_stderr=True)  # fmt: skip
        summary = summarise(log_px, stderr)
        self.scores[str(epoch + 1)] = {
            "test_nll": -summary["log_likelihood"],
            "stderr_over_examples": summary["stderr_over_examples"],
            "monte_carlo_stderr": summary["monte_carlo_stderr"],
            "num_examples": len(self.x),
        }
        text = json.dumps(dict(sorted(self.scores.items(), key=lambda item: int(item[0]))), indent=2) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_together({self.path: lambda partial: partial.write_text(text)})
        self.seconds += time.perf_counter() - start
