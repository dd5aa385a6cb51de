"""Where the default detector loses mAP, measured on the VALIDATION split (the test split stays for
the headline figures): the same detections scored with classes and class-agnostic, so the gap
between the two is what confusing one garment for another costs, and the rest is finding and
placing boxes. Also AP by object size.

    python benchmarks/detection_diagnostics.py [RUN_DIR]     # default saved_models/detection

Writes the `detection_diagnostics` section of benchmarks/RESULTS.md.
"""

import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.results import update_section  # noqa: E402
from toolkit import saving  # noqa: E402
from toolkit.data import detection as detection_data  # noqa: E402
from toolkit.export.pipeline import keras_outputs  # noqa: E402
from toolkit.metrics import detection as metrics  # noqa: E402


def only(ground_truth, outputs, keep_truth, keep_pred):
    """Ground truth and detections restricted by masks (detections outside are dropped, not counted)."""
    truth = [{"boxes": g["boxes"][k], "classes": g["classes"][k]} for g, k in zip(ground_truth, keep_truth)]
    kept = {k: v.copy() for k, v in outputs.items()}
    for i, keep in enumerate(keep_pred):
        n = int(outputs["num_detections"][i])
        rows = np.flatnonzero(keep[:n])
        for key in ("boxes", "scores", "classes"):
            kept[key][i] = 0
            kept[key][i][: len(rows)] = outputs[key][i][rows]
        kept["num_detections"][i] = len(rows)
    return truth, kept


def main(argv):
    run = argv[0] if argv else "saved_models/detection"
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    model = saving.load_model(os.path.join(run, "model.keras"))
    data = detection_data.load(report["dataset"])
    images, truth = data.ground_truth("validation")
    outputs = keras_outputs(model, images)
    n = len(data.class_names)
    with_classes = metrics.evaluate(outputs, truth, n, data.class_names)
    agnostic = metrics.evaluate(
        dict(outputs, classes=np.zeros_like(outputs["classes"])),
        [{"boxes": g["boxes"], "classes": np.zeros_like(g["classes"])} for g in truth],
        1,
    )
    rows = [
        ("with classes (the metric)", with_classes),
        ("class-agnostic (any garment is a hit)", agnostic),
    ]
    short = [np.minimum(g["boxes"][:, 2] - g["boxes"][:, 0], g["boxes"][:, 3] - g["boxes"][:, 1]) for g in truth]
    edges = np.percentile(np.concatenate(short), [33.3, 66.7])
    for name, low, high in (("small", 0, edges[0]), ("medium", edges[0], edges[1]), ("large", edges[1], 1e9)):
        keep_truth = [(s >= low) & (s < high) for s in short]
        pred_short = np.minimum(outputs["boxes"][..., 2] - outputs["boxes"][..., 0],
                                outputs["boxes"][..., 3] - outputs["boxes"][..., 1])  # fmt: skip
        sub_truth, sub_pred = only(truth, outputs, keep_truth, (pred_short >= low) & (pred_short < high))
        if sum(len(g["classes"]) for g in sub_truth):
            rows.append((f"{name} objects (short side {low:.0f}-{min(high, 128):.0f} px)",
                         metrics.evaluate(sub_pred, sub_truth, n)))  # fmt: skip
    body = "\n".join(
        [
            "## Detection diagnostics: where the default detector loses mAP (validation split)",
            "",
            f"Command: `{shlex.join(['python', 'benchmarks/detection_diagnostics.py', *argv])}` "
            f"({time.strftime('%Y-%m-%d')}), on the run `{report['command']}`; "
            f"{len(images):,} validation scenes, Keras model.",
            "",
            "| detections scored | mAP@[.5:.95] | mAP@.5 | mAP@.75 |",
            "|---|---|---|---|",
            *[f"| {name} | {r['map']:.4f} | {r['map50']:.4f} | {r['map75']:.4f} |" for name, r in rows],
            "",
            "Per-class AP@.5: " + ", ".join(f"{k} {v:.3f}" for k, v in with_classes["per_class_ap50"].items()) + ".",
        ]
    )
    update_section("detection_diagnostics", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
