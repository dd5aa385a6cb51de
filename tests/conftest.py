import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Every format of every run is still timed, in 5 calls instead of 1 s (toolkit.export.litert): the suite
# checks that figures exist, benchmarks/ measures them. Subprocesses inherit it.
os.environ.setdefault("TOOLKIT_LATENCY_SECONDS", "0")

from toolkit.data import fashion_mnist  # noqa: E402
from toolkit.data.idx import write_idx  # noqa: E402

# The margin audit (benchmarks/margins.py) reruns every learned-quality test (marker `learned`) with
# other training seeds and kernel paths; each such test seeds its training with SEED and checks its
# figures through `margin`, which records them there. tests/README.md holds the table it wrote.
SEED = int(os.environ.get("TOOLKIT_TEST_SEED", "0"))
MARGIN_LOG_ENV = "TOOLKIT_MARGIN_LOG"  # the audit's JSON-lines file; while set, margins record and never fail


def margin(figure, value, bar, trivial=None, higher=True):
    """A learned-quality check: `value` must reach `bar` (value >= bar, or value <= bar with higher=False).

    `trivial` is what a model that learnt nothing scores (chance, the majority class, a loss ratio of 1),
    or None for agreement bars (an int8 file within `bar` of Keras). Every bar stays clear of `trivial`,
    so a check that a constant predictor passes fails here, before any training."""
    value = float(value)
    if trivial is not None:
        assert (bar > trivial) if higher else (bar < trivial), f"{figure}: bar {bar} is no better than trivial {trivial}"
    log = os.environ.get(MARGIN_LOG_ENV)
    if log:
        record = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0], "figure": figure, "value": value,
            "bar": bar, "trivial": trivial, "higher": higher, "seed": SEED,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"),
        }  # fmt: skip
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
        return
    ok = value >= bar if higher else value <= bar
    assert ok, f"{figure} = {value:.4g}: {'below' if higher else 'above'} its bar {bar} (trivial: {trivial}, seed {SEED})"


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory, worker_id):
    """One JAX compilation cache for the session's subprocesses (they inherit the environment): a test
    that trains the same model twice on JAX (two seeds, recalibration on and off, a resumed run)
    compiles its steps once. The batch-norm test on JAX: 58 s without, 47 s with. Per session, so a
    fresh clone starts empty. A size limit turns on jax's file lock around each read and write
    (jax._src.lru_cache), so the two workers' subprocesses never read an entry half written."""
    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / "jax_compilation_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")  # not every tiny op
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))


@pytest.fixture(scope="session")
def scenes_data_dir(tmp_path_factory, worker_id):
    """A TFDS data dir holding the full default Fashion Scenes (8,000 / 1,000 / 1,000 scenes), composed
    once per test session (about 45 s) and shared by the xdist workers under a file lock, the pattern
    pytest-xdist documents for session fixtures."""
    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    from filelock import FileLock

    from toolkit.data import scenes

    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent  # the workers' common folder for this session
    folder = root / "fashion_scenes_tfds"
    with FileLock(str(folder) + ".lock"):
        scenes.builder(data_dir=str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def fashion_small(tmp_path_factory):
    """A real slice of Fashion-MNIST (Debian's files) as IDX files: 2,000 train and 500 test images."""
    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    folder = tmp_path_factory.mktemp("fashion_small")
    for split, count in (("train", 2000), ("test", 500)):
        images, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, split)
        images_stem, labels_stem = fashion_mnist.FILES[split]
        write_idx(str(folder / f"{images_stem}.gz"), images[:count, ..., 0])
        write_idx(str(folder / labels_stem), labels[:count])
    return str(folder)


@pytest.fixture(scope="session")
def small_images():
    """(images, labels): 64 random 32x32 RGB images whose label is set by their brightest channel."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 120, (64, 32, 32, 3)).astype(np.uint8)
    labels = np.arange(64) % 3
    for i, label in enumerate(labels):
        images[i, ..., label] += 120
    return images, labels.astype(np.int64)


def run_python(code, backend="tensorflow", timeout=900, env=None):
    """Runs code in a fresh interpreter on a Keras backend (the backend is fixed at import)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{backend} subprocess failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def run_cli(*args, backend=None, timeout=900, env=None, **popen):
    """Runs `toolkit ARGS...` as a user would; returns the CompletedProcess. `env` adds variables."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    if backend:
        env["KERAS_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-m", "toolkit.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, **popen
    )


def cli_in_process(*args):
    """`toolkit ARGS...` as toolkit.cli.main in this interpreter, stdout and stderr captured, as a
    CompletedProcess whose returncode is what the `toolkit` executable exits with (it is
    `sys.exit(main())`). A fresh interpreter (run_cli) costs 5-10 s of TensorFlow import per call on these
    machines, so commands that only read a finished run (predict, generate, translate, backbones) come
    here; run_cli stays for training runs, other backends, the real executable's one-line errors
    (tests/test_cli.py), and loading a .keras file where nothing of ours is imported yet. bytes arguments
    become what Python's sys.argv holds for them (os.fsdecode: undecodable bytes as surrogate escapes)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from toolkit import cli

    argv = [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = cli.main(argv)
    return subprocess.CompletedProcess(["toolkit", *argv], code or 0, stdout.getvalue(), stderr.getvalue())


def cli_fails(*args):
    """`toolkit ARGS...` for a command that must fail before any training, in this interpreter
    (cli_in_process): a bad option, a missing run, a corrupt input."""
    done = cli_in_process(*args)
    command = " ".join(done.args[1:])
    assert done.returncode != 0, f"toolkit {command} succeeded; cli_fails is for commands that fail early"
    return done


TINY_PYRAMID = (
    "--verbose", "0", "--neck-channels", "16", "--head-channels", "16", "--calibration-samples", "16",
    "--backbone-option", "widths=(16,16,32,32)", "--backbone-option", "stem_width=16",
)  # fmt: skip


def run_pyramid_recipe(recipe, output, *flags):
    """`toolkit run RECIPE --output OUTPUT` with a tiny backbone, neck and head (TINY_PYRAMID) and `flags`;
    checks that it exits 0 and returns (its run folder, its report.json)."""
    done = run_cli("run", recipe, "--output", str(output), *TINY_PYRAMID, *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    run = output / recipe
    return run, json.loads((run / "report.json").read_text())


def tiny_scenes(count, seed, canvas=64):
    """Small composed scenes of 1-2 items of three unalike classes (t-shirt, trouser, pullover), 20-32 px:
    (images float32 (N, canvas, canvas, 1), truth [{"boxes", "classes"}], class masks int32 (N, canvas, canvas)).
    seed 0 draws items from Fashion-MNIST's test split, other seeds from its train split (held out from
    each other). Skips when Debian's dataset is not installed."""
    from toolkit.data import scenes

    if not os.path.isdir(fashion_mnist.DEFAULT_SOURCE):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make installs it)")
    items, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, "train" if seed else "test")
    keep = labels < 3
    rng = np.random.default_rng(seed)
    made = [
        scenes.compose_scene(rng, items[keep][:3000], labels[keep][:3000], canvas=canvas, max_objects=2,
                             min_side=20, max_side=32)
        for _ in range(count)
    ]  # fmt: skip
    images = np.stack([m[0] for m in made]).astype(np.float32)
    truth = [{"boxes": m[1], "classes": m[2]} for m in made]
    return images, truth, np.stack([m[3][..., 0] for m in made]).astype(np.int32)


# The order in which files reach the two xdist workers. --dist loadfile gives each worker whole
# files, and xdist hands them out most tests first, so the few long files of cross-backend and
# distributed tests (4 and 2 tests, about 300 and 100 s) came last and one worker ran them while the
# other sat idle: 131 s of the 1,694 s suite on 2026-12-07. xdist has no duration-aware order, and
# --dist worksteal would split files and run their module fixtures (up to 94 s) on both workers.
# Longest first instead (LPT scheduling: within 4/3 of the best split), by the seconds each file
# took in a measured run (tests/file_seconds.json, written by tests/file_seconds.py from a junit
# XML); a file missing from the table counts as the median one. Measured: 1,512 s with about 25 s of
# one worker idle (2,974 s of tests), against 131 s idle before (tests/README.md).
with open(os.path.join(os.path.dirname(__file__), "file_seconds.json")) as _f:
    FILE_SECONDS = json.load(_f)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    typical = float(np.median(list(FILE_SECONDS.values())))
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, typical))  # stable: each file keeps its order
