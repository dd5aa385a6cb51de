"""`toolkit.export_model`: the verified files a recipe writes, from a task model trained by user code.

A user who builds a task model on a registered backbone and trains it with their own `model.fit`
gets what `toolkit run` gives: `model.keras`, `saved_model/`, the task's LiteRT files (builtin ops
only, post-processing such as box decoding and NMS inside), `test_data.npz`, `report.json` and
`report.md`, every format scored with the task's metric on the user's test split, compared with
Keras and timed. Keras' own `model.export(format="litert")` turns on Select TF ops and carries no
post-processing, and KerasHub's detectors do not export their NMS to builtin ops
(benchmarks/RESULTS.md, detection): this is the path that gives a file the stock interpreter runs.

The folder is written aside and swapped in whole (`toolkit.runs.RunFolder`): a failed export leaves
an earlier one at `out_dir` as it was. `toolkit benchmark OUT_DIR` re-scores it later like any run.
"""

import os

from toolkit import backbones, tasks
from toolkit.errors import ToolkitError
from toolkit.export import pipeline, report
from toolkit.runs import RunFolder, write_labels


def export_model(model, out_dir, task, test, calibration, class_names=None, threads=2, **inference_options):
    """Exports and verifies `model` (the training model of `task`, as its `build` made it) into `out_dir`.

    test: (inputs, labels) as the task's `score` takes them: inputs one array (or a dict by input name),
      labels class ids for classifiers, `tasks.detection.pack_ground_truth(...)` for detection, class maps
      for segmentation; every format is scored on all of it.
    calibration: representative inputs (training images, not test ones) for the int8 files.
    class_names: written to labels.txt, which `toolkit predict` reads.
    inference_options: the task's inference_model options (detection: max_detections, score_threshold,
      iou_threshold).
    Returns the report (report.json's contents): per format the metric, latency, size and agreement.
    """
    spec = tasks.get(task)
    if spec.is_decoder:
        raise ToolkitError(
            f"{task} is a decoder: its parts and decoding loop are exported and verified by its recipe "
            f"(toolkit run {spec.recipe}); export_model takes the single-pass tasks: "
            + ", ".join(n for n in tasks.names() if not tasks.get(n).is_decoder)
        )
    if not isinstance(test, (tuple, list)) or len(test) != 2:
        raise ToolkitError("test must be (inputs, labels): the split every exported format is scored on")
    test_inputs, test_labels = test
    if calibration is None:
        raise ToolkitError("calibration: give representative inputs (a few dozen training ones) for the int8 files")
    count = len(next(iter(test_inputs.values())) if isinstance(test_inputs, dict) else test_inputs)
    if count == 0:
        raise ToolkitError("test holds no inputs: every format is scored on it")
    exported = spec.inference_model(model, **inference_options)
    root, name = os.path.split(os.path.abspath(out_dir))
    with RunFolder(root, name) as run:
        if class_names is not None:  # first: every .tflite file carries its labels
            write_labels(run.path, [str(c) for c in class_names])
        formats, _ = pipeline.finish_run(run.path, exported, spec.name, test_inputs, test_labels, calibration,
                                         threads)  # fmt: skip
        result = {
            "recipe": spec.recipe,
            "task": spec.name,
            "backend": _backend(),
            "metric": spec.metric,
            "train_seconds": None,  # trained by the user's own code
            "command": f"toolkit.export_model(model, {out_dir!r}, task={task!r}) from user code",
            "formats": formats,
            "params": backbones.count_params(exported),
            "flops": backbones.count_flops(exported),
            "split_sizes": {"test": count},
            "versions": pipeline.versions(),
        }
        report.write_report(run.path, result)
    return result


def _backend():
    import keras

    return keras.backend.backend()
