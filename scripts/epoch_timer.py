"""A Keras callback that records the seconds of every epoch (shared by the scripts)."""

import time


def make_epoch_timer():
    """A callback whose ``seconds`` (wall clock) and ``cpu_seconds`` (process CPU time) hold one value per epoch."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds, self.cpu_seconds = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._start_cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu_seconds.append(time.process_time() - self._start_cpu)

    return EpochTimer()
