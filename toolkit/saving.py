"""Loading `.keras` files safely: Keras `safe_mode` stays on unless the user says they trust the file.

A `.keras` file is a zip archive holding `config.json` and the weights. With `safe_mode` Keras
refuses to deserialise Python code carried in it (a `Lambda` layer's function, any lambda in the
config); a file that needs it is refused here with one line that names it and the flag that
loads it anyway (`--unsafe-load`, only for files from a source one trusts).
"""

import os
import zipfile

from toolkit.errors import ToolkitError

UNSAFE_FLAG = "--unsafe-load"


def register_custom_objects():
    """Imports the backbones and the task registry: the package toolkit.tasks imports every task
    module, and their custom layers register themselves with Keras as they are defined."""
    import toolkit.backbones  # noqa: F401
    import toolkit.tasks  # noqa: F401


def load_model(path, allow_unsafe=False, compile=True):
    """keras.saving.load_model with safe_mode on (off only with allow_unsafe); clear errors for
    a missing file, a file that is not a Keras archive, and a model that carries code."""
    import keras

    register_custom_objects()
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ToolkitError(f"{path}: not a Keras model file (a .keras file is a zip archive with config.json)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as e:
        raise ToolkitError(f"{path}: not a readable Keras model file ({e})") from None
    if "config.json" not in names:
        raise ToolkitError(f"{path}: not a Keras model file (no config.json in the archive)")
    try:
        return keras.saving.load_model(path, safe_mode=not allow_unsafe, compile=compile)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError... for bad archives
        message = " ".join(str(e).split())
        if "safe_mode" in message or "arbitrary code" in message:
            raise ToolkitError(
                f"{path} carries Python code (e.g. a Lambda layer) that runs when it loads; refused under "
                f"Keras safe_mode. Pass {UNSAFE_FLAG} only if you trust where the file came from"
            ) from None
        raise ToolkitError(f"{path}: cannot load as a Keras model ({type(e).__name__}: {message[:200]})") from None
