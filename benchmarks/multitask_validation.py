"""The multi-task and single-task runs scored on the VALIDATION split, per head: what the multi-task
recipe's head weights are chosen on (the test split stays for benchmarks/multitask.py).

    python benchmarks/multitask_validation.py RUN_DIR...    # e.g. saved_models/multitask saved_models/segmentation

Each run's model.keras predicts the embedded scenes' validation split; every head it has is scored
with the multi-task metrics (detection mAP, segmentation mIoU, presence exact match). Writes the
`multitask_validation` section of benchmarks/RESULTS.md.
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
from toolkit.tasks import multitask  # noqa: E402

METRICS = (("detection", "map"), ("segmentation", "miou"), ("classification", "presence_exact"))


def heads_of(outputs):
    """The heads a model has, from its outputs; a segmenter's bare class map is named class_map."""
    outputs = outputs if isinstance(outputs, dict) else {"class_map": outputs}
    heads = [h for h, key in (("detection", "boxes"), ("segmentation", "class_map"), ("classification", "presence"))
             if key in outputs]  # fmt: skip
    return outputs, heads


def main(argv):
    data = detection_data.load("scenes")
    examples = list(data.validation.as_numpy_iterator())
    images = np.stack([e["image"] for e in examples])
    truth = [{"boxes": e["boxes"], "classes": e["classes"]} for e in examples]
    masks = np.stack([e["segmentation_mask"][..., 0] for e in examples])
    rows = []
    for run in argv:
        with open(os.path.join(run, "report.json")) as f:
            report = json.load(f)
        model = saving.load_model(os.path.join(run, "model.keras"), compile=False)
        outputs, heads = heads_of(keras_outputs(model, images))
        labels = multitask.labels_from_ground_truth(truth, masks, len(data.class_names), heads)
        found = multitask.score(outputs, labels, len(data.class_names))
        rows.append((run, report["command"], found))
        print(run, {k: round(v, 4) for k, v in found.items()}, flush=True)
    lines = [
        "## Multi-task head weights, chosen on the validation split (issue 4)",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/multitask_validation.py', *argv])}` "
        f"({time.strftime('%Y-%m-%d')}, {machine()}); {len(images)} validation scenes.",
        "",
        "| run | command | detection mAP | segmentation mIoU | presence exact |",
        "|---|---|---|---|---|",
        *[f"| {os.path.basename(run)} | `{command}` | "
          + " | ".join(f"{found[m]:.4f}" if m in found else "" for _, m in METRICS) + " |"
          for run, command, found in rows],
    ]  # fmt: skip
    body = "\n".join(lines)
    update_section("multitask_validation", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
