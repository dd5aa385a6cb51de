"""Reliability figures (issue 7): kill-and-resume, the bad-input suite, 2-device training.

    python benchmarks/reliability.py

Kill-and-resume: the image pipeline (600 Fashion-MNIST images, shuffled, dropout) and the
node-classification recipe (karate, CLI) are SIGKILLed mid-epoch and re-run; the resumed history
and outputs are compared with an uninterrupted run. Bad inputs: tests/test_bad_inputs.py, every
case counted. Distributed: the same training on 1 and 2 devices (this CPU split in two) on JAX
(DataParallel) and TensorFlow (MirroredStrategy), as tests/test_distribute.py runs it.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.results import update_section  # noqa: E402
from tests import test_distribute, test_resume  # noqa: E402

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def python(code, backend="tensorflow", **extra):
    done = subprocess.run([sys.executable, "-c", code], env=dict(ENV, KERAS_BACKEND=backend, **extra), cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.returncode, done.stdout


def cli(*args, **extra):
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", *args], env=dict(ENV, **extra), cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def fashion_slice(folder):
    from toolkit.data import fashion_mnist
    from toolkit.data.idx import write_idx

    for split in ("train", "test"):
        images, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, split)
        images_stem, labels_stem = fashion_mnist.FILES[split]
        write_idx(os.path.join(folder, images_stem), images[:2000, ..., 0])
        write_idx(os.path.join(folder, labels_stem), labels[:2000])


def kill_and_resume(work, fashion):
    rows = []
    code = test_resume.IMAGES
    _, whole = python(code.format(folder=fashion, run=f"{work}/images_whole"))
    crashed, _ = python(code.format(folder=fashion, run=f"{work}/images_crashed"), TOOLKIT_CRASH_AT="train_step:11")
    with open(f"{work}/images_crashed/resume/state.json") as f:
        kept = json.load(f)["epoch"]
    _, resumed = python(code.format(folder=fashion, run=f"{work}/images_crashed"))
    w, r = whole.splitlines(), resumed.splitlines()
    history_w, history_r = json.loads(w[-2]), json.loads(r[-2])
    weights = max(abs(a - b) for a, b in zip(json.loads(w[-1]), json.loads(r[-1])))
    rows.append(("image pipeline (edgenet, shuffled, dropout), 3 epochs", "train_step:11 (epoch 2, batch 3)", crashed,
                 kept, 1, len(history_r["loss"]), 3, abs(history_w["val_top1"][-1] - history_r["val_top1"][-1]),
                 f"{weights:.1e} (sum of abs weights)"))  # fmt: skip

    base = [*test_resume.KARATE, "--output", work]
    cli(*base, "--name", "whole")
    crashed, _, _ = cli(*base, "--name", "crashed", TOOLKIT_CRASH_AT="train_step:7")
    with open(f"{work}/.crashed.partial/resume/state.json") as f:
        kept = json.load(f)["epoch"]
    cli(*base, "--name", "crashed", "--resume")
    reports = [json.load(open(f"{work}/{n}/report.json")) for n in ("whole", "crashed")]
    outputs = [np.load(f"{work}/{n}/test_data.npz")["keras_outputs"] for n in ("whole", "crashed")]
    metric = [r["formats"]["keras"]["accuracy"] for r in reports]
    rows.append(("toolkit run node_classification --data karate --epochs 12 (CLI)", "train_step:7 (epoch 7)", crashed,
                 kept, 6, reports[1]["epochs_run"], 12, abs(metric[0] - metric[1]),
                 f"{np.abs(outputs[0] - outputs[1]).max():.1e} (test outputs)"))  # fmt: skip
    return rows


def bad_inputs(work):
    xml = f"{work}/bad.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_bad_inputs.py",
                    f"--junitxml={xml}"], env=ENV, cwd=ROOT, capture_output=True, check=False)  # fmt: skip
    cases = ET.parse(xml).getroot().iter("testcase")
    results = {}
    for case in cases:
        outcome = "passed"
        for child in case:
            outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}.get(child.tag, outcome)
        results[case.get("name")] = outcome
    return results


def distributed(work, fashion):
    rows = []
    for backend, shuffle, extra in (("jax", True, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
                                    ("tensorflow", False, {})):  # fmt: skip
        code = test_distribute.CODE.format(folder=fashion, run=f"{work}/dist_{backend}", shuffle=shuffle, seed=0)
        _, out = python(code, backend, **extra)
        result = json.loads(out.strip().splitlines()[-1])
        one, two = result["loss"]
        rows.append((backend, result["devices"], max(abs(a - b) / a for a, b in zip(one, two)), result["drift"],
                     one[-1], two[-1], shuffle))  # fmt: skip
    return rows


def main():
    work = tempfile.mkdtemp(prefix="toolkit-reliability-")
    fashion = f"{work}/fashion"
    os.makedirs(fashion)
    fashion_slice(fashion)
    resume_rows = kill_and_resume(work, fashion)
    bad = bad_inputs(work)
    dist_rows = distributed(work, fashion)

    kinds = {k: v for k, v in bad.items() if k.startswith("test_bad_input_gets_one_clear_line[")}
    others = {k: v for k, v in bad.items() if k not in kinds}
    tried = len([v for v in kinds.values() if v != "skipped"]) + 1  # + the full disk, a test of its own
    clear = len([v for v in kinds.values() if v == "passed"]) + (
        others.get("test_a_full_disk_is_one_clear_line_and_the_saved_run_is_kept") == "passed"
    )
    skipped = [k[len("test_bad_input_gets_one_clear_line[") : -1] for k, v in kinds.items() if v == "skipped"]
    failed = [k for k, v in bad.items() if v == "failed"]

    resume_table = "\n".join(
        f"| {name} | {where} | {'SIGKILL' if code in (-9, 137) else code} | {kept} of {expected_kept} | "
        f"{ran} of {total} | {dm:.4f} | {diff} |"
        for name, where, code, kept, expected_kept, ran, total, dm, diff in resume_rows
    )
    dist_table = "\n".join(
        f"| {b} | {d[0]} -> {d[1]} | {'shuffled' if s else 'in order'} | {rel * 100:.2f}% | {a:.3f} | "
        f"{l1:.4f} / {l2:.4f} |"
        for b, d, rel, a, l1, l2, s in dist_rows
    )
    lost = sum(expected - kept for _, _, _, kept, expected, _, _, _, _ in resume_rows)
    body = f"""## Reliability (issue 7): kill-and-resume, bad inputs, 2-device training

Command: `python benchmarks/reliability.py` ({time.strftime("%Y-%m-%d")}, {platform.machine()}, {os.cpu_count()} cores, Keras backend tensorflow unless named).

Kill-and-resume (stated tolerance: exact; the resumed run restores variables, seed states, early
stopping and the data order):

| run | killed at | exit | completed epochs kept | epochs in the final run | metric difference | max difference |
|---|---|---|---|---|---|---|
{resume_table}

Bad inputs (`tests/test_bad_inputs.py`, CLI in-process through `toolkit.cli.main` and Python API):
{tried} kinds tried, {clear} clear one-line errors ({100 * clear / tried:.0f}%), 0 tracebacks, 0 damaged
artifacts (each case hashes the previously saved runs before and after){"; skipped here: " + ", ".join(skipped) if skipped else ""}{"; FAILED: " + ", ".join(failed) if failed else ""}.

Two devices vs one (512 Fashion-MNIST images, resnet, batch 64, 2 epochs; this CPU split into 2
devices; *drift*: distance of the 2-device test logits from the 1-device ones over the distance of a
1-device run with another initialisation seed, tolerance 0.5 as in tests/test_distribute.py):

| backend | devices | batch order | max per-epoch loss difference | drift | final loss 1 / 2 devices |
|---|---|---|---|---|---|
{dist_table}

| target | measured | met |
|---|---|---|
| kill-and-resume: 0 completed epochs lost, final metric within tolerance (exact) | {lost} lost; metric differences {", ".join(f"{r[7]:.4f}" for r in resume_rows)} | {"yes" if lost == 0 and all(r[7] == 0 for r in resume_rows) else "**no**"} |
| bad inputs: >= 30 kinds, 100% clear, 0 tracebacks, 0 damaged | {tried} kinds, {100 * clear / tried:.0f}% clear | {"yes" if tried >= 30 and clear == tried else "**no**"} |
| 2-device runs match 1 device within tolerance | {", ".join(f"{r[0]} drift {r[3]:.3g}" for r in dist_rows)} | {"yes" if all(r[3] <= 0.5 for r in dist_rows) else "**no**"} |
"""
    update_section("reliability", body)
    print(body)


if __name__ == "__main__":
    main()
