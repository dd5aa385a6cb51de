"""Detection benchmark: the default recipe against the issue's targets, a KerasHub baseline and transfer.

    python benchmarks/detection.py [--skip-baseline] [--skip-retinanet] [--skip-yolov8] [--skip-transfer] [--reuse]
                                   [recipe flags]

--reuse takes the runs this script made earlier from saved_models/ (detection, detection_transfer,
classification_for_detection) instead of training them again.

1. Runs the default recipe (Fashion-MNIST scenes, resnet + FPN + anchor-free head) and reads its
   report.json: test mAP@[.5:.95] and mAP@.5 per format, training time, latency and size.
2. Peers in the same run: KerasHub's RetinaNetObjectDetector (benchmarks/retinanet_baseline.py) and
   KerasCV's YOLOV8Detector (benchmarks/yolov8_baseline.py) on the same backbone (our registered
   `resnet`, the same options), data, batch size, augmentation and wall-clock training budget,
   scored with the same metric; their batch-1 latency, and whether their full inference path (with
   their NMS) exports to a LiteRT file that the stock interpreter runs (benchmarks/detector_peers.py).
   --skip-baseline skips both, --skip-retinanet or --skip-yolov8 one; with --reuse a peer's figures
   from an earlier run (saved_models/<peer>/report.json) are taken when they exist.
3. Transfer: the same recipe and budget starting from the backbone the classification recipe
   trained (same backbone and options), against the run from scratch in step 1.
4. The classifier's batch-1 LiteRT int8 latency beside the detector's (from the classification run).
Writes the `detection` section of benchmarks/RESULTS.md.
"""

import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import load_report, run_or_reuse, save_report, script_flags, update_section  # noqa: E402
from benchmarks.results import transfer as transfer_run  # noqa: E402
from recipes import detection as recipe  # noqa: E402
from toolkit.export.report import format_table  # noqa: E402


def main(argv):
    command = shlex.join(["python", "benchmarks/detection.py", *argv])
    flags = "--skip-baseline", "--skip-retinanet", "--skip-yolov8", "--skip-transfer", "--reuse"
    given, argv = script_flags(argv, *flags)
    skip_baseline, skip_retinanet, skip_yolov8, skip_transfer, reuse = given.values()
    args = recipe.parse_args(argv)
    report = run_or_reuse("detection", reuse, lambda: recipe.main(argv + ["--verbose", "2"]))
    f = report["formats"]
    keras_map, keras_map50 = f["keras"]["map"], f["keras"]["map50"]

    transfer = None
    if not skip_transfer:
        transfer = transfer_run(recipe, "detection_transfer", args, argv, reuse)
        classifier = transfer[1]
    else:
        classifier = load_report("classification_for_detection") or load_report("classification")

    peers = {}  # name -> figures, for each peer run (or reused) beside ours
    for name, skipped in (("retinanet", skip_retinanet), ("yolov8", skip_yolov8)):
        if skip_baseline or skipped:
            continue

        def train_peer(name=name):
            import importlib

            found = importlib.import_module(f"benchmarks.{name}_baseline").run(args, report["train_seconds"])
            save_report(f"{name}_baseline", found)
            return found

        peers[name] = run_or_reuse(f"{name}_baseline", reuse, train_peer)
    baseline = peers.get("retinanet")
    yolov8 = peers.get("yolov8")

    checks = [
        ("Keras mAP@.5 >= 0.90", f"{keras_map50:.4f}", keras_map50 >= 0.90),
        ("Keras mAP@[.5:.95] >= 0.65", f"{keras_map:.4f}", keras_map >= 0.65),
        ("training <= 10 min", f"{report['train_seconds']:.0f} s", report["train_seconds"] <= 600),
        ("LiteRT int8 mAP@[.5:.95] within 2 pt of Keras",
         f"{(f['tflite_int8']['map'] - keras_map) * 100:+.2f} pt", abs(f["tflite_int8"]["map"] - keras_map) <= 0.02),
        ("LiteRT fp32 with NMS inside gives Keras' detections (same class, IoU >= 0.99; raw maps within 1e-4)",
         f"{f['tflite_fp32'].get('identical_detections', float('nan')):.4f} identical, max diff over matched pairs "
         f"{f['tflite_fp32']['max_abs_diff']:.1e}, raw maps {f['tflite_fp32'].get('raw_max_abs_diff', float('nan')):.1e},"
         f" mAP {f['tflite_fp32']['map']:.4f}",
         abs(f["tflite_fp32"]["map"] - keras_map) <= 1e-3 and f["tflite_fp32"].get("raw_max_abs_diff", 1) <= 1e-4),
    ]  # fmt: skip
    if baseline:
        ours_latency = f["tflite_int8"]["latency_ms"]
        checks += [
            ("higher mAP@[.5:.95] than KerasHub RetinaNet (same backbone, data, wall-clock training budget)",
             f"{keras_map:.4f} vs {baseline['map']:.4f}", keras_map > baseline["map"]),
            ("lower batch-1 latency than RetinaNet",
             f"ours LiteRT int8 {ours_latency:.2f} ms (Keras {f['keras']['latency_ms']:.1f} ms) vs RetinaNet "
             f"{baseline['latency_text']}", ours_latency < baseline["best_latency_ms"]),
            ("ours exports with NMS inside to the stock interpreter; RetinaNet does not",
             f"ours: yes; RetinaNet: {baseline['litert']['status']} ({baseline['litert']['reason']})",
             baseline["litert"]["status"] != "ok" or not baseline["litert"].get("nms_inside")),
        ]  # fmt: skip
    if yolov8:
        checks += [
            ("higher mAP@[.5:.95] than KerasCV YOLOv8 (same backbone, data, wall-clock training budget)",
             f"{keras_map:.4f} vs {yolov8['map']:.4f}", keras_map > yolov8["map"]),
            ("lower batch-1 latency than YOLOv8",
             f"ours LiteRT int8 {f['tflite_int8']['latency_ms']:.2f} ms vs YOLOv8 {yolov8['latency_text']}",
             f["tflite_int8"]["latency_ms"] < yolov8["best_latency_ms"]),
            ("ours exports with NMS inside to the stock interpreter; YOLOv8 does not",
             f"ours: yes; YOLOv8: {yolov8['litert']['status']} ({yolov8['litert']['reason']})",
             yolov8["litert"]["status"] != "ok" or not yolov8["litert"].get("nms_inside")),
        ]  # fmt: skip
    lines = [
        "## Detection (issue 3): Fashion-MNIST scenes, default recipe",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Keras backend {report['backend']}).",
        f"Recipe: `{report['command']}`; backbone `{report['backbone']}` {report['backbone_options'] or ''}, "
        f"{report['params']:,} parameters, {report['flops'] / 1e6:.0f} MFLOPs per 128x128 image; "
        f"{report['epochs_run']} epochs in {report['train_seconds']:.0f} s "
        f"({report['images_per_second']:.0f} images/s). Splits: {report['split_sizes']} scenes.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
        "",
        f"Per format, whole test split ({report['split_sizes']['test']:,} scenes), batch-1 latency of the model "
        "with decoding and NMS inside:",
        "",
        format_table(report),
        "",
        "Per-class AP@[.5:.95] (Keras): " + ", ".join(f"{k} {v:.3f}" for k, v in report["per_class_ap"].items()) + ".",
    ]
    if classifier:
        c = classifier["formats"]
        lines += [
            "",
            f"Batch-1 LiteRT int8 latency: detector (128x128 scene, decoding + NMS inside) "
            f"{f['tflite_int8']['latency_ms']:.2f} ms; classifier (`{classifier['backbone']}`, 28x28 item) "
            f"{c['tflite_int8']['latency_ms']:.3f} ms; fp32 {f['tflite_fp32']['latency_ms']:.2f} ms vs "
            f"{c['tflite_fp32']['latency_ms']:.3f} ms.",
        ]
    if transfer:
        t = transfer[0]["formats"]["keras"]
        lines += [
            "",
            f"Transfer (`--backbone-preset` from the classification recipe's `{transfer[1]['backbone']}`, "
            f"Fashion-MNIST top-1 {transfer[1]['formats']['keras']['top1']:.4f}), same recipe and budget: "
            f"test mAP@[.5:.95] {t['map']:.4f} (mAP@.5 {t['map50']:.4f}) vs {keras_map:.4f} "
            f"({keras_map50:.4f}) from scratch; {transfer[0]['epochs_run']} epochs in "
            f"{transfer[0]['train_seconds']:.0f} s.",
        ]
    for peer in peers.values():
        lines += ["", peer["summary"]]
    body = "\n".join(lines)
    update_section("detection", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
