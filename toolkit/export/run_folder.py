"""Run folders are written aside and swapped in whole: a failed run never touches the last good one."""

import os
import re
import shutil
import tempfile

from toolkit.errors import ToolkitError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunFolder:
    """`with RunFolder(root, name) as run:` writes under `run.path` (a staging folder beside the
    final one); leaving the block normally swaps it into `root/name`, an exception discards it."""

    def __init__(self, root, name):
        if not SAFE_NAME.match(name) or name in (".", ".."):
            raise ToolkitError(f"run name {name!r} must be letters, digits, '_', '-' or '.' (no path)")
        self.root = os.path.abspath(root)
        self.final = os.path.join(self.root, name)
        self.name = name
        self.path = None

    def __enter__(self):
        try:
            os.makedirs(self.root, exist_ok=True)
            self.path = tempfile.mkdtemp(prefix=f".{self.name}.staging-", dir=self.root)
        except OSError as e:
            raise ToolkitError(f"cannot write to output folder {self.root}: {e.strerror}") from None
        return self

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return False
        self.commit()
        return False

    def commit(self):
        """Two renames: the old folder steps aside, the new one takes its name, then the old goes."""
        old = None
        if os.path.exists(self.final):
            old = tempfile.mkdtemp(prefix=f".{self.name}.old-", dir=self.root)
            os.rename(self.final, os.path.join(old, self.name))
        os.rename(self.path, self.final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        self.path = self.final


def write_atomic(path, data):
    """Writes bytes or text to a temporary name beside `path`, then renames it into place."""
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


LABELS_FILE = "labels.txt"


def write_labels(run_dir, class_names):
    """labels.txt: one class name per line, in the model's output order (what predict reads back)."""
    write_atomic(os.path.join(run_dir, LABELS_FILE), "\n".join(class_names) + "\n")


def read_labels(run_dir, recipe):
    path = os.path.join(run_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise ToolkitError(f"{path} not found: is {run_dir} a finished {recipe} run?")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]
