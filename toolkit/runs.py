"""The run-folder format: every file name of a run once, reading a finished run (`Run.load`),
atomic writes, crash points, labels, and `RunFolder`, which writes a run aside and swaps it in whole.

A failed run never touches the last good one. A run writes into `ROOT/.NAME.partial/` (hidden,
locked while a process writes it). Leaving the `with` block normally swaps it into `ROOT/NAME` in
one atomic step (Linux `renameat2` with RENAME_EXCHANGE; two renames elsewhere). A crash, SIGKILL
included, leaves the partial folder and its training state (`resume/`, see `toolkit.training`) in
place: a re-run of the same command finds it by name and continues from the last completed epoch.
An error before any epoch was completed discards the partial folder; `restart=True` (`--restart`)
discards it on purpose.
"""

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import tempfile

from toolkit.errors import ToolkitError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CRASH_ENV = "TOOLKIT_CRASH_AT"  # fault injection for the crash tests: a stage name, or "train_step:N"

# === File names: every file of a run folder, named here only (as KerasHub's preset_utils does) ===
MODEL_FILE = "model.keras"  # the trained task model; every other format is made from it
SAVED_MODEL_DIR = "saved_model"  # the SavedModel LiteRT converts from (decoders: saved_model/<part>/)
REPORT_FILE = "report.json"  # what marks a finished run: metric, latency and size per format, the command
REPORT_MD_FILE = "report.md"  # the model card
BENCHMARK_FILE = "benchmark.json"  # `toolkit benchmark`'s table, every format
MEDIAPIPE_RECORD_FILE = "mediapipe.json"  # `toolkit mediapipe`: per MediaPipe file, its scores and MediaPipe's check
ONNX_FILE = "model.onnx"  # `toolkit benchmark`'s ONNX Runtime peer of the LiteRT files
VERIFY_FILE = "test_data.npz"  # the stored test split and Keras' outputs: `toolkit benchmark` re-scores on it
BACKBONE_PRESET_DIR = "backbone"  # the trained backbone as a preset (toolkit.backbones.presets): --backbone-preset
LABELS_FILE = "labels.txt"  # class names, one a line, in the model's output order
INTENSITY_FILE = "intensity.json"  # how 16-bit pixels map to 0..255 (toolkit.data.intensity); 8-bit runs: none
VOCABULARY_FILE = "vocab.txt"  # the (source) WordPiece vocabulary of a text run
TARGET_VOCABULARY_FILE = "target_vocab.txt"  # a translation run's target-language vocabulary
RESUME_DIR = "resume"  # the training state, under the partial folder (toolkit.training writes it)
CONFIG_FILE = "config.json"  # beside the state: the options that made it, checked on resume
STATE_FILE = "state.json"  # beside it: the commit point, naming the arrays file of the last completed epoch


def tflite_file(fmt, part="model"):
    """'tflite_int8' -> 'model_int8.tflite'; a decoder's parts: ('tflite_fp32', 'step') -> 'step_fp32.tflite'."""
    return f"{part}_{fmt.split('_', 1)[1]}.tflite"


def crash_point(name):
    """SIGKILLs this process when TOOLKIT_CRASH_AT names `name`: how the tests crash a run for real."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def check_name(name, what="run name"):
    """A name that stays inside its folder: letters, digits, '_', '-', '.', not starting with '.'."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", ".."):
        raise ToolkitError(f"{what} {name!r} must be letters, digits, '_', '-' or '.' (no path, not hidden)")
    return name


class RunFolder:
    """`with RunFolder(root, name) as run:` writes under `run.path` (the partial folder beside the
    final one); leaving the block normally swaps it into `root/name`.

    config: the options that define the run (a dict of JSON values); a partial folder left by a
    crash is resumed only when they are the same. require_resume: refuse to start from scratch."""

    def __init__(self, root, name, config=None, restart=False, require_resume=False):
        check_name(name)
        self.root = os.path.abspath(root)
        self.final = os.path.join(self.root, name)
        self.name = name
        self.partial = os.path.join(self.root, f".{name}.partial")
        self.config = config
        self.restart = restart
        self.require_resume = require_resume
        self.path = None
        self.resuming = False
        self._lock = None

    def __enter__(self):
        try:
            os.makedirs(self.partial, exist_ok=True)
            self._lock = os.open(self.partial, os.O_RDONLY)
        except OSError as e:
            raise ToolkitError(f"cannot write to output folder {self.root}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            self._lock = None
            raise ToolkitError(f"another process is writing run {self.name!r} in {self.root}") from None
        try:
            self._prepare()
            _check_writable(self.partial)
        except BaseException:
            if not os.path.isfile(os.path.join(self.partial, RESUME_DIR, STATE_FILE)):
                shutil.rmtree(self.partial, ignore_errors=True)  # made just now, holds nothing to resume
            self._unlock()
            raise
        self.path = self.partial
        return self

    def _prepare(self):
        state = os.path.join(self.partial, RESUME_DIR, STATE_FILE)
        config_path = os.path.join(self.partial, RESUME_DIR, CONFIG_FILE)
        has_state = os.path.isfile(state)
        if self.restart or not has_state:
            _empty(self.partial)
        elif self.config is not None and os.path.isfile(config_path):
            with open(config_path) as f:
                saved = json.load(f)
            current = json.loads(json.dumps(self.config))  # as it was saved: tuples are lists in JSON
            differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            if differing:
                k = differing[0]
                raise ToolkitError(
                    f"an interrupted run {self.name!r} in {self.root} was made with {k}={saved.get(k)!r}, "
                    f"not {self.config.get(k)!r}: rerun it as it was, or pass --restart to discard it"
                )
        if self.require_resume and (self.restart or not has_state):
            raise ToolkitError(f"--resume: no interrupted run {self.name!r} in {self.root} to continue")
        self.resuming = has_state and not self.restart
        if self.config is not None:
            os.makedirs(os.path.dirname(config_path), exist_ok=True)
            write_atomic(config_path, json.dumps(self.config, sort_keys=True))

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.commit()
            elif not os.path.isfile(os.path.join(self.partial, RESUME_DIR, STATE_FILE)):
                shutil.rmtree(self.partial, ignore_errors=True)  # nothing worth resuming
        finally:
            self._unlock()
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise ToolkitError(f"cannot write the run in {self.root}: {exc.strerror}") from None
        return False

    def commit(self):
        """The training state goes, then one atomic exchange puts the new folder in place of the old."""
        shutil.rmtree(os.path.join(self.partial, RESUME_DIR), ignore_errors=True)
        crash_point("commit")
        replace_folder(self.partial, self.final)
        self.path = self.final

    def _unlock(self):
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def _check_writable(folder):
    """Fails early, naming the folder, when it cannot take a file (read-only, full, no permission)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:  # a buffered write retries a short write, so a full disk raises
                f.write(b"\0" * 65536)
        finally:
            os.remove(probe)
    except OSError as e:
        raise ToolkitError(f"cannot write to output folder {os.path.dirname(folder)}: {e.strerror}") from None


def _empty(folder):
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


_RENAME_EXCHANGE = 2


def _exchange(a, b):
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), b)


def replace_folder(new, final):
    """Puts the complete folder `new` in place of `final` (or at it, when there is none) in one atomic
    exchange (Linux renameat2), or two renames elsewhere; the old folder is removed afterwards."""
    if os.path.exists(final):
        if _exchange(new, final):
            shutil.rmtree(new, ignore_errors=True)  # now holds the old folder
        else:  # no renameat2: the old folder steps aside, the new one takes its name
            name = os.path.basename(final)
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=os.path.dirname(final))
            os.rename(final, os.path.join(old, name))
            os.rename(new, final)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, final)


def write_atomic(path, data):
    """Writes bytes, text, or what `data(file)` writes to an open binary file (np.savez, without a
    copy in memory) to a temporary name beside `path`, synced, then renames it into place: the one
    atomic write of the project."""
    mode = "w" if isinstance(data, str) else "wb"
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, mode) as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):  # a file replaced keeps its permissions (mkstemp makes owner-only files)
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_labels(run_dir, class_names):
    """labels.txt: one class name per line, in the model's output order (what predict reads back)."""
    write_atomic(os.path.join(run_dir, LABELS_FILE), "\n".join(class_names) + "\n")


def read_labels(run_dir, recipe=None):
    path = os.path.join(run_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise ToolkitError(f"{path} not found: is {run_dir} a finished {recipe + ' ' if recipe else ''}run?")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


# === Reading a finished run ===
class Run:
    """A finished run folder, read. `Run.load(path)` needs its report.json (what marks a run as
    finished); `Run.of(path, recipe)` serves commands that need no more than a model file and its
    labels or vocabulary (predict, generate): a folder someone assembled by hand without report.json
    is taken as it is, one whose report names another recipe is refused. Loading the model stays with
    the caller (`toolkit.saving` sits above this module)."""

    def __init__(self, path, report=None):
        self.path = path
        self.report = report
        self.recipe = (report or {}).get("recipe")

    @classmethod
    def load(cls, path):
        file = os.path.join(path, REPORT_FILE)
        if not os.path.isfile(file):
            raise ToolkitError(f"{file} not found: is {path} a finished run folder?")
        try:
            with open(file, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise ToolkitError(f"{file} is not valid JSON ({e}): is {path} a finished run folder?") from None
        if not isinstance(report, dict):
            raise ToolkitError(f"{file} is not a JSON object: is {path} a finished run folder?")
        return cls(path, report)

    @classmethod
    def of(cls, path, recipe):
        """The run at `path` for `recipe`: its report is read when it has one, and must name `recipe`."""
        if not os.path.isdir(path):
            raise ToolkitError(f"{path}: no such run folder")
        if not os.path.isfile(os.path.join(path, REPORT_FILE)):
            return cls(path, {"recipe": recipe})
        run = cls.load(path)
        if run.recipe != recipe:
            raise ToolkitError(f"{path} is a {run.recipe} run, not a {recipe} run: pass the --run folder of a "
                               f"{recipe} run")  # fmt: skip
        return run

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def tflite(self, fmt, part="model"):
        """The path of LiteRT format `fmt` ('tflite_int8'), or of one decoder part in it."""
        return self.file(tflite_file(fmt, part))

    def require(self, *parts):
        """The path of a file the run must hold, or a one-line error naming it."""
        path = self.file(*parts)
        if not os.path.exists(path):
            raise ToolkitError(f"{path} not found: is {self.path} a finished run folder?")
        return path

    def labels(self, recipe=None):
        return read_labels(self.path, recipe or self.recipe)
