"""Node-classification benchmark: the default recipe over 5 seeds on the embedded graphs.

    python benchmarks/node_classification.py [--seeds 0,1,2,3,4] [extra recipe flags]

For each graph (Drosophila connectome, karate club) and seed (the seed picks the labelled
training nodes and the initialisation), runs the recipe and reads its report.json: GCN test
accuracy (Keras and LiteRT), the two baselines trained in the same run on the same labelled
nodes (logistic regression on the same node features; label propagation on the same graph),
training time and LiteRT parity. Reports mean and standard deviation over seeds.
Writes its section of benchmarks/RESULTS.md.
"""

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.results import update_section  # noqa: E402
from recipes import node_classification as recipe  # noqa: E402

GRAPHS = ("drosophila", "karate")


def stats(values):
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2,3,4")
    args, extra = p.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, checks, details = [], [], []
    for graph in GRAPHS:
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as out:
                runs.append(recipe.main(["--data", graph, "--seed", str(seed), "--output", out, *extra]))
        gcn = [r["formats"]["keras"]["accuracy"] for r in runs]
        int8 = [r["formats"]["tflite_int8"]["accuracy"] for r in runs]
        logistic = [r["baselines"]["logistic_regression"] for r in runs]
        propagation = [r["baselines"]["label_propagation"] for r in runs]
        seconds = [r["train_seconds"] for r in runs]
        diff = max(r["formats"]["tflite_fp32"]["max_abs_diff"] for r in runs)
        first = runs[0]
        rows.append(
            f"| {graph} | {first['nodes']} | {first['split_sizes']} | {stats(gcn)} | {stats(int8)} | "
            f"{stats(logistic)} | {stats(propagation)} | {np.mean(seconds):.1f} (max {max(seconds):.1f}) | {diff:.1e} |"
        )
        details.append(f"{graph} per seed, GCN / logistic / propagation: " + "; ".join(
            f"{g:.3f} / {lr:.3f} / {lp:.3f}" for g, lr, lp in zip(gcn, logistic, propagation)
        ))  # fmt: skip
        if graph == "drosophila":
            beats = np.mean(gcn) > max(np.mean(logistic), np.mean(propagation))
            checks.append(("Drosophila: GCN test accuracy above both baselines (mean of seeds)",
                           f"{np.mean(gcn):.4f} vs {np.mean(logistic):.4f} / {np.mean(propagation):.4f}", beats))  # fmt: skip
        else:
            checks.append(
                ("karate club test accuracy >= 0.9 (mean of seeds)", f"{np.mean(gcn):.4f}", np.mean(gcn) >= 0.9)
            )
        checks.append((f"{graph}: training <= 60 s", f"max {max(seconds):.1f} s", max(seconds) <= 60))
        checks.append((f"{graph}: LiteRT fp32 max abs diff <= 1e-4", f"{diff:.1e}", diff <= 1e-4))
    body = "\n".join(
        [
            "## Node classification (issue 9): GCN on embedded graphs, default recipe, seeds " + args.seeds,
            "",
            f"Command: `{shlex.join(['python', 'benchmarks/node_classification.py', *argv])}` "
            f"({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores). "
            "Each seed draws its own labelled nodes (5 per class) and initialisation; the rest of the nodes are "
            "split evenly into validation (early stopping) and test.",
            "",
            "| target | measured | met |",
            "|---|---|---|",
            *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
            "",
            "Test accuracy, mean ± std over seeds (baselines trained in the same run on the same labelled nodes):",
            "",
            "| graph | nodes | split | GCN (Keras) | GCN (LiteRT int8) | logistic regression (same features) "
            "| label propagation (same graph) | train s | fp32 max abs diff |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *[f"- {d}" for d in details],
        ]
    )
    update_section("node_classification", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
