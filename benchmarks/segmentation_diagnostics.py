"""Where the default segmenter loses mIoU, measured on the VALIDATION split (the test split stays for
the headline figures). The same class maps are re-scored three ways, each fixing one kind of error:

- foreground IoU: background against any item (is each item found and outlined?);
- one class per item: inside each true item, every pixel predicted as an item takes the item's most
  frequent predicted class (what a per-item vote would fix: items split between two classes);
- true class per item: those pixels take the item's true class (what perfect garment recognition
  would fix; what is left is outlines: missed or spilled pixels).

    python benchmarks/segmentation_diagnostics.py [RUN_DIR]     # default saved_models/segmentation

Writes the `segmentation_diagnostics` section of benchmarks/RESULTS.md. Needs the scenes' instance
masks, so it reads runs on the embedded scenes.
"""

import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.results import machine, update_section  # noqa: E402
from toolkit import saving  # noqa: E402
from toolkit.data import detection as detection_data  # noqa: E402
from toolkit.export.pipeline import keras_outputs  # noqa: E402
from toolkit.metrics import segmentation as metrics  # noqa: E402


def per_item(predicted, truth, instances, true_class):
    """Inside each true item, the pixels predicted as some item take one class: the item's most frequent
    predicted class, or (true_class) its true class. Background predictions are left as they are."""
    fixed = predicted.copy()
    for i in range(len(predicted)):
        for item in np.unique(instances[i]):
            if item == 0:
                continue
            inside = (instances[i] == item) & (predicted[i] > 0)
            if not inside.any():
                continue
            if true_class:
                fixed[i][inside] = np.bincount(truth[i][instances[i] == item]).argmax()
            else:
                fixed[i][inside] = np.bincount(predicted[i][inside]).argmax()
    return fixed


def main(argv):
    run = argv[0] if argv else "saved_models/segmentation"
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    model = saving.load_model(os.path.join(run, "model.keras"), compile=False)
    data = detection_data.load(report["dataset"])
    examples = list(data.validation.as_numpy_iterator())
    images = np.stack([e["image"] for e in examples])
    truth = np.stack([e["segmentation_mask"][..., 0] for e in examples]).astype(np.int64)
    instances = np.stack([e["instance_mask"][..., 0] for e in examples])
    predicted = np.asarray(keras_outputs(model, images)).astype(np.int64)
    n = len(data.class_names) + 1
    rows = [
        ("as predicted (the metric)", metrics.evaluate(predicted, truth, n)),
        ("one class per item (vote inside each true item)", metrics.evaluate(per_item(predicted, truth, instances, False), truth, n)),
        ("true class per item (only outlines wrong)", metrics.evaluate(per_item(predicted, truth, instances, True), truth, n)),
    ]  # fmt: skip
    foreground = metrics.evaluate(np.minimum(predicted, 1), np.minimum(truth, 1), 2)["per_class_iou"][1]
    fragmented = np.mean([
        len(np.unique(predicted[i][(instances[i] == item) & (predicted[i] > 0)])) > 1
        for i in range(len(predicted)) for item in np.unique(instances[i]) if item
    ])  # fmt: skip
    names = ["background", *data.class_names]
    lines = [
        "## Segmentation diagnostics (issue 4): where the default segmenter loses mIoU (validation split)",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/segmentation_diagnostics.py', *argv])}` "
        f"({time.strftime('%Y-%m-%d')}, {machine()}); run `{report['command']}`, "
        f"{len(images)} validation scenes. Not used to choose anything.",
        "",
        "| class maps scored | mIoU | pixel accuracy |",
        "|---|---|---|",
        *[f"| {name} | {r['miou']:.4f} | {r['pixel_accuracy']:.4f} |" for name, r in rows],
        "",
        f"Foreground IoU (background against any item): {foreground:.4f}. Items whose predicted pixels hold more "
        f"than one class: {fragmented:.1%}.",
        "",
        "Per-class IoU as predicted / with the true class per item: "
        + ", ".join(
            f"{names[c]} {rows[0][1]['per_class_iou'].get(c, float('nan')):.3f} / "
            f"{rows[2][1]['per_class_iou'].get(c, float('nan')):.3f}"
            for c in range(n)
        )
        + ".",
    ]
    body = "\n".join(lines)
    update_section("segmentation_diagnostics", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
