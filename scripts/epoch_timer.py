"""A Keras callback that records the wall-clock seconds of every epoch (shared by the scripts)."""

import time


def make_epoch_timer():
    """Return a callback whose ``seconds`` list holds one duration per epoch."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()
