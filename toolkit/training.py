"""What every recipe's model.fit shares: callbacks, resume after a crash, timing.

Resume: `fit` writes the whole training state at the end of every epoch under `run_dir/resume/`
(the run's partial folder, which a crash leaves in place and a re-run of the same command finds
again, see `toolkit.runs`). A re-run restores it and continues from the last completed epoch;
nothing of a completed epoch is lost. The state is every model variable
(weights, and the seed states of dropout and other random layers), every optimizer variable
(moments, iteration count, so the learning-rate schedule continues), the epoch, the history so
far, early stopping's bookkeeping and best weights, and the position of the training data: each
epoch's shuffle and augmentation draw from seeds that tf.data advances once per pass over the
data, so the resumed run first passes over `data_state` objects as many times as epochs were done.
"""

import contextlib
import json
import os
import signal
import time
import warnings

import keras
import numpy as np

from toolkit.errors import ToolkitError
from toolkit.runs import CRASH_ENV, RESUME_DIR, STATE_FILE, crash_point, write_atomic


class Resume(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, made crash-safe and complete.

    Keras' own writes `latest.weights.h5` in place and then the epoch (a crash between the two
    pairs new weights with an old epoch) and keeps neither seed states nor other callbacks'
    state. Here each epoch's arrays go to a fresh file, then `state.json` is renamed over the old
    one: a crash at any instant leaves the previous complete state. What Keras' callback does on
    `on_train_begin` (set the model's initial epoch) is kept."""

    def __init__(self, backup_dir, stateful_callbacks=(), data_state=()):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.stateful_callbacks = list(stateful_callbacks)
        self.data_state = list(data_state)
        self.history = {}
        self.resumed_from = 0
        self.recalibrated = False  # the saved state already holds recalibrated batch-norm statistics
        self.previous_seconds = 0.0  # training time of the epochs restored from an interrupted run

    def on_train_begin(self, logs=None):
        self._began = time.perf_counter()
        super().on_train_begin(logs)

    # -- restore ---------------------------------------------------------------------------
    def _load_model(self):
        state = read_state(self.backup_dir)
        if state is None:
            return
        arrays_path = os.path.join(self.backup_dir, state["arrays"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        with np.load(arrays_path) as arrays:
            _assign(self.model.variables, arrays, "model", self.backup_dir)
            if self.model.optimizer is not None:
                _assign(self.model.optimizer.variables, arrays, "optimizer", self.backup_dir)
            for callback in self.stateful_callbacks:
                if isinstance(callback, keras.callbacks.EarlyStopping):
                    _restore_early_stopping(callback, state.get("early_stopping"), arrays)
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.previous_seconds = float(state.get("seconds", 0.0))
        epoch = state["epoch"]
        self._current_epoch = epoch
        self.recalibrated = bool(state.get("recalibrated"))
        # Training that already ended (all epochs, or stopped early) does not start again.
        self.model._initial_epoch = self.params["epochs"] if state.get("finished") else epoch
        self.resumed_from = epoch
        for dataset in self.data_state:
            for _ in range(epoch * _passes_per_epoch(dataset)):
                iter(dataset)
        print(f"resuming from {self.backup_dir}: {epoch} completed epoch(s) restored", flush=True)

    # -- save ------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._current_epoch = epoch + 1
        self._save_model()

    def on_train_end(self, logs=None):
        state = read_state(self.backup_dir)
        if state is not None and not state.get("finished"):
            # Early stopping may have put the best weights back: the finished state keeps those.
            self._save_model(finished=True)

    def save_recalibrated(self):
        """The finished state again, with the recalibrated batch-norm statistics: a re-run restores
        them as they are instead of recomputing them on a data order that differs."""
        self.recalibrated = True
        for callback in self.stateful_callbacks:
            # Early stopping puts its best weights back at every fit's end, a re-run's too: after fit the
            # model holds those best weights, now with the recalibrated statistics.
            if isinstance(callback, keras.callbacks.EarlyStopping) and callback.best_weights is not None:
                callback.best_weights = self.model.get_weights()
        self._save_model(finished=True)

    def _save_model(self, finished=False):
        os.makedirs(self.backup_dir, exist_ok=True)
        arrays = {f"model/{i}": np.asarray(v) for i, v in enumerate(self.model.variables)}
        if self.model.optimizer is not None:
            arrays.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(self.model.optimizer.variables)})
        state = {
            "epoch": self._current_epoch,
            "finished": bool(finished or self.model.stop_training or self._current_epoch >= self.params["epochs"]),
            "history": self.history,
            "seconds": self.previous_seconds + time.perf_counter() - self._began,
            "recalibrated": self.recalibrated,
            "variables": {
                "model": [v.path for v in self.model.variables],
                "optimizer": [v.path for v in self.model.optimizer.variables] if self.model.optimizer else [],
            },
        }
        for callback in self.stateful_callbacks:
            if isinstance(callback, keras.callbacks.EarlyStopping):
                state["early_stopping"], best = _early_stopping_state(callback)
                arrays.update({f"best/{i}": w for i, w in enumerate(best)})
        name = f"epoch-{self._current_epoch:05d}{'-final' if finished else ''}.npz"
        write_atomic(os.path.join(self.backup_dir, name), lambda f: np.savez(f, **arrays))
        crash_point("between_state_files")
        state["arrays"] = name
        write_atomic(os.path.join(self.backup_dir, STATE_FILE), json.dumps(state))
        for old in os.listdir(self.backup_dir):  # only after the new state names its own file
            if old.endswith(".npz") and old != name:
                os.remove(os.path.join(self.backup_dir, old))


def _passes_per_epoch(dataset):
    """How many iterators Keras' epoch loop opens on a dataset per epoch: each one draws the next
    shuffle seed. Keras 3 (trainers/epoch_iterator.py) opens one at the start of every epoch and,
    when the number of batches is known, one more at its end, ready for the next; the resume test
    checks that a resumed run sees exactly the batches of an uninterrupted one."""

    return 2 if int(dataset.cardinality()) > 0 else 1


def read_state(backup_dir):
    path = os.path.join(backup_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
        if not os.path.isfile(os.path.join(backup_dir, state["arrays"])):
            raise KeyError(state["arrays"])
    except (OSError, ValueError, KeyError) as e:
        raise ToolkitError(f"resume state {path} is damaged ({e}); pass --restart to train from scratch") from None
    return state


def _assign(variables, arrays, prefix, where):
    saved = sorted((k for k in arrays.files if k.startswith(prefix + "/")), key=lambda k: int(k.split("/")[1]))
    if len(saved) != len(variables):
        raise ToolkitError(
            f"resume state in {where} holds {len(saved)} {prefix} variables, this model has {len(variables)}: "
            "it was written by another model; pass --restart"
        )
    for variable, key in zip(variables, saved):
        value = arrays[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise ToolkitError(
                f"resume state in {where}: {variable.path} is {value.shape}, the model has {variable.shape}; "
                "pass --restart"
            )
        variable.assign(value)


def _early_stopping_state(callback):
    best = callback.best_weights or []
    fields = {k: getattr(callback, k) for k in ("wait", "stopped_epoch", "best_epoch")}
    fields["best"] = None if callback.best is None else float(callback.best)
    fields["has_best_weights"] = callback.best_weights is not None
    return fields, [np.asarray(w) for w in best]


def _restore_early_stopping(callback, fields, arrays):
    if not fields:
        return
    for key in ("wait", "stopped_epoch", "best_epoch", "best"):
        setattr(callback, key, fields[key])
    if fields["has_best_weights"]:
        keys = sorted((k for k in arrays.files if k.startswith("best/")), key=lambda k: int(k.split("/")[1]))
        callback.best_weights = [arrays[k] for k in keys]


def callbacks(run_dir, monitor="val_loss", patience=3, mode="min", data_state=()):
    """TensorBoard logs, early stopping back to the best epoch, and the resume state (last)."""
    stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
    found = [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False, profile_batch=0),
        stopping,
        # Last: it saves after early stopping has updated its state, and restores after it resets it.
        Resume(os.path.join(run_dir, RESUME_DIR), stateful_callbacks=[stopping], data_state=data_state),
    ]
    crash = os.environ.get(CRASH_ENV, "")
    if crash.startswith("train_step:"):
        found.append(_CrashAtStep(int(crash.split(":")[1])))
    return found


class _CrashAtStep(keras.callbacks.Callback):
    """SIGKILL after the given number of training steps in this process (mid-epoch crash tests)."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            os.kill(os.getpid(), signal.SIGKILL)


CPU_DEVICES_ENV = "TOOLKIT_CPU_DEVICES"  # split the CPU into N devices (tests, CPU-only experiments)
_distribution = {}  # the active one: {"backend", "devices", "strategy"}


def distribute(enabled=True):
    """Makes every model built after this call data-parallel over all local devices, with the
    backend's own mechanism (no gradient exchange of ours): `keras.distribution.DataParallel` on
    JAX, `tf.distribute.MirroredStrategy` on TensorFlow. `fit` trains under it and ends it, so the
    export that follows runs on one device. Returns the number of devices (1 when not enabled)."""
    if not enabled:
        return 1
    backend = keras.backend.backend()
    count = int(os.environ.get(CPU_DEVICES_ENV, "0") or 0)
    if backend == "jax":
        flag = f"--xla_force_host_platform_device_count={count}"
        if count and flag not in os.environ.get("XLA_FLAGS", ""):  # read when jax first looks for devices
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
        import jax

        devices = jax.devices()
        if len(devices) < 2:
            raise ToolkitError(
                f"--distribute needs at least 2 devices, jax sees {len(devices)} ({devices[0].platform}); "
                f"on CPU set {CPU_DEVICES_ENV}=2 (or XLA_FLAGS=--xla_force_host_platform_device_count=2)"
            )
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        _distribution.update(backend=backend, devices=len(devices))
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if count and not gpus:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
            except RuntimeError:  # the runtime already started with its own device list
                pass
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        if len(devices) < 2:
            raise ToolkitError(
                f"--distribute needs at least 2 devices, TensorFlow sees {len(devices)}; on CPU set {CPU_DEVICES_ENV}=2"
            )
        strategy = tf.distribute.MirroredStrategy(devices)
        tf.distribute.experimental_set_strategy(strategy)
        _distribution.update(backend=backend, devices=len(devices), strategy=strategy)
    else:
        raise ToolkitError(f"--distribute supports the jax and tensorflow backends, not {backend}")
    print(f"--distribute: data-parallel over {len(devices)} {backend} devices", flush=True)
    return len(devices)


def end_distribution():
    """Back to one device: the trained model exports and predicts as any other."""
    if _distribution.get("backend") == "jax":
        keras.distribution.set_distribution(None)
    elif _distribution.get("backend") == "tensorflow":
        import tensorflow as tf

        tf.distribute.experimental_set_strategy(None)
    _distribution.clear()


def _whole_batches(dataset, devices):
    """JAX shards each batch evenly over the devices: a last batch that does not divide is left out."""
    import tensorflow as tf

    if dataset is None or devices < 2:
        return dataset
    return dataset.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] % devices == 0)


@contextlib.contextmanager
def _distributed_fit(model):
    """Under MirroredStrategy each replica would normalise over its own slice of the batch; Keras'
    `synchronized` batch normalisation uses the global batch's statistics, as one device does. It
    is switched off again after training: the saved model stays loadable on every backend."""
    synced = []
    if _distribution.get("backend") == "tensorflow":
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
                layer.synchronized = True
                synced.append(layer)
    try:
        yield
    finally:
        for layer in synced:
            layer.synchronized = False
        end_distribution()


def batch_norm_layers(model):
    """The BatchNormalization layers that training updates (a frozen one keeps its statistics)."""
    return [
        layer for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]  # fmt: skip


def recalibrate_batch_norm(model, data, max_batches=200):
    """Sets every trainable BatchNormalization's moving mean and variance to the average of its batch
    statistics over `data` (up to `max_batches` batches), computed with the model's final weights.

    Why: Keras' moving averages (momentum 0.99) forget their zero/one start only after a few hundred
    steps and always lag the weights. A detector trained for 120 steps on 12 images peaked at 0.90 in
    training mode and 0.02 in inference mode, so every exported file found nothing (issue 15). This is
    what `torch.optim.swa_utils.update_bn` and timm do after training: one pass in training mode with
    a cumulative average (momentum 0 per batch, the mean taken here). Each batch runs eagerly, so it
    works the same on every backend. `data` yields batches `x` or tuples `(x, y, ...)`; returns the
    number of batches used (0 when the model has no such layer)."""
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64), np.zeros(layer.moving_variance.shape, np.float64)]
            for layer in layers]  # fmt: skip
    count = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # moving statistics := this batch's statistics
        for batch in data:
            if count >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs, training=True)
            for layer, (mean, variance) in zip(layers, sums):
                mean += np.asarray(keras.ops.convert_to_numpy(layer.moving_mean), np.float64)
                variance += np.asarray(keras.ops.convert_to_numpy(layer.moving_variance), np.float64)
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if count == 0:
        raise ToolkitError("batch-norm recalibration found no training batch: the training data is empty")
    for layer, (mean, variance) in zip(layers, sums):
        layer.moving_mean.assign((mean / count).astype(layer.moving_mean.dtype))
        layer.moving_variance.assign((variance / count).astype(layer.moving_variance.dtype))
    return count


def fit(model, train, validation, epochs, run_dir, patience=3, verbose="auto", data_state=None, recalibrate=True):
    """model.fit with the shared callbacks, resuming from `run_dir/resume/` when a crashed run left it.

    Returns (history dict over all epochs, resumed ones included; wall seconds of training, the
    interrupted run's included).
    `data_state`: datasets whose per-pass random state must be replayed on resume (default: `train`).
    `recalibrate`: afterwards, batch-norm statistics are recomputed on `train` with the final weights
    (`recalibrate_batch_norm`) and saved in the resume state, which a re-run restores as they are.
    The best epoch's weights are written to `run_dir/checkpoints/best.weights.h5`."""
    start = time.perf_counter()
    found = callbacks(run_dir, patience=patience, data_state=[train] if data_state is None else data_state)
    resume = next(c for c in found if isinstance(c, Resume))
    if _distribution.get("backend") == "jax":
        train, validation = (_whole_batches(d, _distribution["devices"]) for d in (train, validation))
    with _distributed_fit(model), warnings.catch_warnings():
        # Keras warns that fit's default shuffle=True does not apply to a tf.data pipeline: ours shuffles itself.
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        model.fit(train, validation_data=validation, epochs=epochs, callbacks=found, verbose=verbose)
    if not resume.history.get("loss"):
        raise ToolkitError("training ran no epoch: the training data is empty")
    bad = [k for k in ("loss", "val_loss") if not np.isfinite(resume.history.get(k, [0.0])[-1])]
    if bad:
        raise ToolkitError(
            f"training diverged: {bad[0]} is {resume.history[bad[0]][-1]} (lower --learning-rate, check the data)"
        )
    if recalibrate and not resume.recalibrated and recalibrate_batch_norm(model, train):
        resume.save_recalibrated()
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    model.save_weights(os.path.join(run_dir, "checkpoints", "best.weights.h5"))
    return resume.history, resume.previous_seconds + time.perf_counter() - start
