"""Peak memory of a training run as the data grows: the classification recipe on 1x and 8x Fashion-MNIST.

    python benchmarks/memory.py                 # 1x and 8x the training split, 1 epoch each
    python benchmarks/memory.py --scales 1,2    # a quicker look

The 8x dataset repeats the 60,000 training images eight times (480,000) as IDX files; the test
split stays the 10,000 real test images, so both runs score the same thing. Each dataset is
first converted to TFDS records in its own process (the conversion is not training), then
`toolkit run classification` trains on it in a fresh process, and the peak resident memory of
that process (ru_maxrss from wait4) is recorded. Target: the 8x run within 1.2x of the 1x run.
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.results import update_section  # noqa: E402


def make_dataset(folder, scale):
    from toolkit.data import fashion_mnist
    from toolkit.data.idx import write_idx

    if os.path.isfile(os.path.join(folder, "done")):
        return
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "test"):
        images, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, split)
        times = scale if split == "train" else 1
        images_stem, labels_stem = fashion_mnist.FILES[split]
        write_idx(os.path.join(folder, images_stem), np.tile(images[..., 0], (times, 1, 1)))
        write_idx(os.path.join(folder, labels_stem), np.tile(labels, times))
    open(os.path.join(folder, "done"), "w").close()


def peak_rss_mb(command, env):
    """Runs `command`; returns (peak RSS of that process in MB, wall seconds, exit status)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{process.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="1,8")
    p.add_argument("--epochs", default="1")
    p.add_argument("--backbone", default="resnet")
    p.add_argument("--work", default="/tmp/toolkit-memory", help="datasets, TFDS records and runs go here")
    args = p.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rows = []
    for scale in scales:
        folder = os.path.join(args.work, f"fashion_x{scale}")
        data_dir = os.path.join(args.work, f"tfds_x{scale}")
        make_dataset(folder, scale)
        prepare = [
            sys.executable,
            "-c",
            f"from toolkit.data import fashion_mnist; fashion_mnist.builder({folder!r}, {data_dir!r})",
        ]
        subprocess.run(prepare, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        command = [
            sys.executable, "-m", "toolkit.cli", "run", "classification", "--data", f"fashion_mnist:{folder}",
            "--data-dir", data_dir, "--output", os.path.join(args.work, "runs"), "--name", f"x{scale}",
            "--epochs", args.epochs, "--backbone", args.backbone, "--verbose", "0", "--restart",
        ]  # fmt: skip
        peak, seconds = peak_rss_mb(command, env)
        rows.append((scale, 54_000 * scale, peak, seconds))
        print(f"x{scale}: {54_000 * scale} training images, peak RSS {peak:.0f} MB, {seconds:.0f} s", flush=True)

    base = rows[0][2]
    table = ["| data | training images | peak RSS MB | vs 1x | wall s |", "|---|---|---|---|---|"]
    table += [f"| {s}x | {n:,} | {m:.0f} | {m / base:.2f}x | {t:.0f} |" for s, n, m, t in rows]
    ratio = rows[-1][2] / base
    body = f"""## Memory as the data grows (issue 7)

Command: `python benchmarks/memory.py --scales {args.scales} --epochs {args.epochs}` ({time.strftime("%Y-%m-%d")}, {platform.machine()}, {os.cpu_count()} cores).
Each run: `toolkit run classification --data fashion_mnist:FOLDER --epochs {args.epochs} --backbone {args.backbone}` in a fresh
process, training split repeated {"x, ".join(str(s) for s in scales)}x (test split: the real 10,000 each time), after the
IDX files were converted to TFDS records in a separate process. Peak RSS is the run process's ru_maxrss (training,
export to SavedModel and LiteRT, and verification included).

{chr(10).join(table)}

| target | measured | met |
|---|---|---|
| peak RSS at {scales[-1]}x <= 1.2x the 1x run | {ratio:.2f}x | {"yes" if ratio <= 1.2 else "**no**"} |

Why it stays flat: the splits stream from the TFDS record files (`builder.as_dataset`, files read in order)
through a 20,000-image shuffle buffer; nothing holds a whole split in memory.
"""
    update_section("memory", body)
    print(body)


if __name__ == "__main__":
    main()
