"""The margin audit: every learned-quality test (marker `learned`) over training seeds and kernel paths.

    python benchmarks/margins.py [--seeds 10] [--onednn-off-seeds 5] [--cross-backend-seeds 5] [--reuse]
    python benchmarks/margins.py --rerun tests/test_distribute.py   # after changing a test

Each configuration is one `pytest -m learned` run with TOOLKIT_TEST_SEED (the tests' training seed)
and TF_ENABLE_ONEDNN_OPTS set; `tests.conftest.margin` records every figure instead of failing
(conftest.MARGIN_LOG_ENV). oneDNN off stands in for another CPU: TensorFlow then picks other kernels,
as it does on an Intel Xeon with AVX-512 FP16/AMX where a seeded run gave other figures (issue 14).
The jax and torch tests (marker `cross_backend`) do not use TensorFlow's kernels for training, so they
run with oneDNN on only, over `--cross-backend-seeds` seeds.

Writes the table to tests/README.md (section "margins"): per figure its bar, what a model that learnt
nothing scores, and the worst value seen with oneDNN on and off. Configurations already in the log
(saved_models/margins/log.jsonl) are not run again: an interrupted audit continues where it stopped;
--reuse only rewrites the table from the log. --rerun FILE... drops those files' figures from the log
and measures them again over the same configurations (the other tests' figures are kept).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results import machine, update_section  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG = os.path.join(ROOT, "saved_models", "margins", "log.jsonl")
README = os.path.join(ROOT, "tests", "README.md")


def configurations(seeds, off_seeds, cross_seeds):
    """(seed, oneDNN flag, pytest marker expression) for each pytest run."""
    found = [(s, "1", "learned and not cross_backend") for s in range(seeds)]
    found += [(s, "0", "learned and not cross_backend") for s in range(off_seeds)]
    found += [(s, "1", "learned and cross_backend") for s in range(cross_seeds)]
    return sorted(found, key=lambda c: c[0])  # seed by seed: an early stop still covers every test


def read_log(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_configuration(seed, onednn, marks, log, files=()):
    env = dict(os.environ, TOOLKIT_TEST_SEED=str(seed), TF_ENABLE_ONEDNN_OPTS=onednn, TOOLKIT_MARGIN_LOG=log,
               TF_CPP_MIN_LOG_LEVEL="3")  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-m", marks, "-n", "2", "--dist", "loadfile", "-p",
               "no:cacheprovider", *files]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    if files:  # a rerun: the configuration's own record is already in the log
        print(f"seed {seed} oneDNN {onednn} {' '.join(files)}: {tail}", flush=True)
        return
    with open(log, "a") as f:  # the configuration's end: an interrupted audit reruns only what has none
        f.write(json.dumps({"config": [seed, onednn, marks], "summary": tail, "failed": failed,
                            "seconds": round(time.perf_counter() - start)}) + "\n")  # fmt: skip
    print(f"seed {seed} oneDNN {onednn} [{marks}]: {tail} ({time.perf_counter() - start:.0f} s)", flush=True)


def short(test):
    return re.sub(r"^tests/", "", test).replace("::", " ")


def fmt(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def table(records, configs_done):
    """Markdown rows: one per (test, figure)."""
    figures = {}
    for r in records:
        if "figure" in r:
            figures.setdefault((r["test"], r["figure"]), []).append(r)
    rows = [
        "| test | figure | bar | trivial | oneDNN on: worst (seeds) | oneDNN off: worst (seeds) | worst margin |",
        "|---|---|---|---|---|---|---|",
    ]
    tight = []
    for (test, figure), found in sorted(figures.items()):
        higher = found[0]["higher"]
        bar = found[0]["bar"]
        pick = min if higher else max

        def worst(flag):
            values = [r["value"] for r in found if r["onednn"] == flag]
            return (pick(values), len({r["seed"] for r in found if r["onednn"] == flag})) if values else (None, 0)

        on, off = worst("1"), worst("0")
        seen = [v for v, _ in (on, off) if v is not None]
        gap = (min(seen) - bar) if higher else (bar - max(seen))
        if gap < 0:
            tight.append((test, figure, gap))
        sign = ">=" if higher else "<="
        rows.append(
            f"| {short(test)} | {figure} | {sign} {fmt(bar)} | {fmt(found[0]['trivial'])} | {fmt(on[0])} ({on[1]}) | "
            f"{fmt(off[0])} ({off[1]}) | {gap:+.3g} |"
        )
    return rows, tight


def write_readme(records, args):
    done = [r for r in records if "config" in r]
    rows, tight = table(records, done)
    failures = sorted({f for r in done for f in r["failed"]})
    seconds = sum(r["seconds"] for r in done)
    body = [
        "## Margins of the learned-quality tests (issue 14)",
        "",
        f"Command: `python benchmarks/margins.py --seeds {args.seeds} --onednn-off-seeds {args.onednn_off_seeds} "
        f"--cross-backend-seeds {args.cross_backend_seeds}` ({time.strftime('%Y-%m-%d')}, {machine()}; "
        f"{len(done)} pytest runs, {seconds / 60:.0f} min).",
        "",
        "Every test marked `learned` checks its figures with `tests.conftest.margin(figure, value, bar, trivial)`; "
        "the audit reruns them with training seeds 0..N-1 (`TOOLKIT_TEST_SEED`) and with "
        "`TF_ENABLE_ONEDNN_OPTS` on and off. *trivial* is what a model that learnt nothing scores (chance, the "
        "majority vote, a loss ratio of 1; `-` for agreement bars such as int8 within x of Keras); `margin` "
        "refuses a bar that does not beat it. *worst margin* is the distance from the worst value seen to the "
        "bar (positive: every run passed). The jax/torch tests run with oneDNN on only.",
        "",
        *rows,
        "",
    ]
    if tight:
        body.append("Figures that missed their bar in some run: " + "; ".join(f"{short(t)} {f} ({g:+.3g})"
                                                                              for t, f, g in tight) + ".")  # fmt: skip
    if failures:
        body.append("Other assertions that failed in some run: " + "; ".join(failures) + ".")
    update_section("margins", "\n".join(body), README, "# Tests\n")
    print("\n".join(rows))
    if tight:
        print("missed:", tight)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="training seeds with oneDNN on")
    p.add_argument("--onednn-off-seeds", type=int, default=5, help="training seeds with TF_ENABLE_ONEDNN_OPTS=0")
    p.add_argument("--cross-backend-seeds", type=int, default=5, help="seeds for the jax/torch tests")
    p.add_argument("--log", default=LOG)
    p.add_argument("--reuse", action="store_true", help="only rewrite the table from the log")
    p.add_argument("--rerun", nargs="+", default=(), metavar="FILE", help="measure these test files again")
    args = p.parse_args(argv)
    os.makedirs(os.path.dirname(args.log), exist_ok=True)
    if args.rerun:
        files = [os.path.relpath(os.path.abspath(f), ROOT) for f in args.rerun]
        kept = [r for r in read_log(args.log) if not any(r.get("test", "").startswith(f + "::") for f in files)]
        with open(args.log, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        for seed, onednn, marks in configurations(args.seeds, args.onednn_off_seeds, args.cross_backend_seeds):
            run_configuration(seed, onednn, marks, args.log, files)
    elif not args.reuse:
        done = {tuple(r["config"]) for r in read_log(args.log) if "config" in r}
        for seed, onednn, marks in configurations(args.seeds, args.onednn_off_seeds, args.cross_backend_seeds):
            if (seed, onednn, marks) not in done:
                run_configuration(seed, onednn, marks, args.log)
    write_readme(read_log(args.log), args)


if __name__ == "__main__":
    main()
