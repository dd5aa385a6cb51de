"""What every recipe's model.fit shares: callbacks, timing, backbone-weight transfer."""

import os
import time

import keras

from toolkit.errors import ToolkitError


def callbacks(run_dir, monitor="val_loss", patience=3, mode="min"):
    """Best-epoch checkpoint, TensorBoard logs, and early stopping back to the best epoch."""
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    return [
        keras.callbacks.ModelCheckpoint(
            os.path.join(run_dir, "checkpoints", "best.weights.h5"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False, profile_batch=0),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
    ]


def fit(model, train, validation, epochs, run_dir, patience=3, verbose="auto"):
    """model.fit with the shared callbacks; returns (history dict, wall seconds)."""
    start = time.perf_counter()
    history = model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        callbacks=callbacks(run_dir, patience=patience),
        verbose=verbose,
    )
    return history.history, time.perf_counter() - start


def load_backbone_weights(backbone, path):
    """Loads weights saved from the same backbone (by another recipe) into `backbone`."""
    if not os.path.isfile(path):
        raise ToolkitError(f"backbone weights file {path} does not exist")
    try:
        backbone.load_weights(path)
    except Exception as e:  # shape or layer mismatch: say which file and which backbone
        raise ToolkitError(f"{path} does not fit backbone {backbone.name!r}: {str(e).splitlines()[0]}") from None
