"""Training a baseline for the same wall-clock budget as our model took: its throughput is measured on
a few warm-up batches (which count against the budget), its learning-rate schedule is planned for the
steps that fit, and training stops at the budget."""

import time

import keras
import numpy as np


class BatchTimes(keras.callbacks.Callback):
    """Wall time of every training batch (the first pays for tracing)."""

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times = getattr(self, "times", []) + [time.perf_counter() - self.start]


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the batch that crosses `seconds` of wall time since training began."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.batches = seconds, 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True


def fit_within(seconds, model, compile_for, batches, warmup_batches=8, verbose=2):
    """Trains `model` for `seconds` of wall time on `batches` (an endless dataset of (x, y) batches).
    compile_for(total_steps) compiles the model with its schedule over that many steps. Returns
    (seconds taken, batches trained)."""
    start = time.perf_counter()
    timer = BatchTimes()
    compile_for(warmup_batches)
    model.fit(batches.take(warmup_batches), epochs=1, callbacks=[timer], verbose=0)
    per_batch = float(np.median(timer.times[2:]))
    remaining = seconds - (time.perf_counter() - start)
    steps = max(1, int(remaining / per_batch))
    budget = TimeBudget(remaining)
    compile_for(steps)
    model.fit(batches.take(steps), epochs=1, callbacks=[budget], verbose=verbose)
    return time.perf_counter() - start, warmup_batches + budget.batches
