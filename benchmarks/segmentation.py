"""Segmentation benchmark: the default recipe against the issue's targets, KerasHub's DeepLabV3+ and transfer.

    python benchmarks/segmentation.py [--skip-baseline] [--skip-transfer] [--reuse] [recipe flags]

--reuse takes the runs this script made earlier from saved_models/ (segmentation, segmentation_transfer,
classification_for_detection, and the baseline's figures in deeplab_baseline) instead of training them again.

1. Runs the default recipe (Fashion-MNIST scenes, resnet + FPN + segmentation head) and reads its
   report.json: test mIoU per format, training time, latency, size, fraction of differing pixels.
2. Baseline in the same run: KerasHub's DeepLabV3ImageSegmenter (DeepLabV3+) on the same backbone,
   options, data, loss and batch size, trained for the wall-clock time our run took
   (benchmarks/deeplab_baseline.py); its test mIoU and
   the max abs diff of its fp32 LiteRT logits against Keras, beside ours.
3. Transfer: the same recipe and budget from the backbone the classification recipe trained with
   the same backbone options (the detection benchmark's classification_for_detection run).
Writes the `segmentation` section of benchmarks/RESULTS.md.
"""

import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.results import (  # noqa: E402
    OUTPUT,
    machine,
    run_or_reuse,
    save_report,
    script_flags,
    update_section,
)
from benchmarks.results import transfer as transfer_run  # noqa: E402
from recipes import segmentation as recipe  # noqa: E402
from toolkit.export.report import format_table  # noqa: E402

BASELINE = "deeplab_baseline"  # its figures are kept in saved_models/deeplab_baseline/report.json for --reuse


def ours_logits_diff(workdir, count=200):
    """Our trained logits model (the exported graph before its arg-max) through the same fp32 check as the baseline."""
    import keras
    import numpy as np

    from benchmarks.deeplab_baseline import litert_logits_diff
    from toolkit import saving

    run = os.path.join(OUTPUT, "segmentation")
    segmenter = saving.load_model(os.path.join(run, "model.keras"), compile=False)
    logits = keras.Model(segmenter.input, segmenter.get_layer("class_map").input)
    images = np.load(os.path.join(run, "test_data.npz"))["input__image"][:count]
    return litert_logits_diff(logits, images, workdir, "ours")


def main(argv):
    command = shlex.join(["python", "benchmarks/segmentation.py", *argv])
    given, argv = script_flags(argv, "--skip-baseline", "--skip-transfer", "--reuse")
    skip_baseline, skip_transfer, reuse = given.values()
    args = recipe.parse_args(argv)
    report = run_or_reuse("segmentation", reuse, lambda: recipe.main(argv + ["--verbose", "2"]))
    f = report["formats"]
    keras_miou = f["keras"]["miou"]
    int8_drop = (keras_miou - f["tflite_int8"]["miou"]) * 100

    transfer = None
    if not skip_transfer:
        transfer = transfer_run(recipe, "segmentation_transfer", args, argv, reuse)

    checks = [
        ("Keras mIoU >= 0.85", f"{keras_miou:.4f}", keras_miou >= 0.85),
        ("training <= 10 min", f"{report['train_seconds']:.0f} s",
         report["train_seconds"] <= 600),
        ("LiteRT int8 mIoU within 2 pt of Keras", f"{-int8_drop:+.2f} pt", abs(int8_drop) <= 2),
        ("LiteRT fp32 class map matches Keras", f"max abs diff {f['tflite_fp32']['max_abs_diff']:.1e}, "
         f"{f['tflite_fp32']['differing_pixels']:.1e} of pixels differ", f["tflite_fp32"]["differing_pixels"] == 0),
    ]  # fmt: skip
    baseline = None
    if not skip_baseline:
        from benchmarks import deeplab_baseline
        from toolkit.data import segmentation as segmentation_data

        def train_baseline():
            with tempfile.TemporaryDirectory() as workdir:
                data = segmentation_data.load(args.data, data_dir=args.data_dir, image_size=args.image_size)
                found = deeplab_baseline.run(args, data, workdir, budget_seconds=report["train_seconds"])
                found.pop("model")
                found["ours"] = ours_logits_diff(workdir)
            save_report(BASELINE, found)
            return found

        baseline = run_or_reuse(BASELINE, reuse, train_baseline)
        ours = baseline["ours"]
        b = baseline["litert"]
        checks += [
            ("mIoU at least KerasHub DeepLabV3+'s (same backbone, data, loss, wall-clock budget)",
             f"{keras_miou:.4f} vs {baseline['miou']:.4f}", keras_miou >= baseline["miou"]),
            ("fp32 LiteRT logits match Keras (max abs diff <= 1e-4)",
             f"ours {ours['max_abs_diff']:.1e} (logits up to {ours['logit_range']:.0f}); DeepLabV3+ "
             f"{b['max_abs_diff']:.1e} (logits up to {b['logit_range']:.0f}, {b['differing_pixels']:.1e} of arg-max "
             "pixels differ)", ours["max_abs_diff"] <= 1e-4),
        ]  # fmt: skip
    lines = [
        "## Segmentation (issue 4): Fashion-MNIST scenes, default recipe",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {machine()}; Keras backend {report['backend']}).",
        f"Recipe: `{report['command']}`; backbone `{report['backbone']}` {report['backbone_options'] or ''}, "
        f"{report['params']:,} parameters, {report['flops'] / 1e6:.0f} MFLOPs per 128x128 image; "
        f"{report['epochs_run']} epochs in {report['train_seconds']:.0f} s "
        f"({report['images_per_second']:.0f} images/s); best validation mIoU {report['best_val_miou']:.4f}. "
        f"Splits: {report['split_sizes']} scenes.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in checks],
        "",
        f"Per format, whole test split ({report['split_sizes']['test']:,} scenes), batch-1 latency of the model "
        "with the arg-max inside (uint8 class map out):",
        "",
        format_table(report),
        "",
        "Per-class IoU (Keras): " + ", ".join(f"{k} {v:.3f}" for k, v in report["per_class_iou"].items()) + ".",
    ]
    if transfer:
        t = transfer[0]["formats"]["keras"]
        lines += [
            "",
            f"Transfer (`--backbone-preset` from the classification recipe's `{transfer[1]['backbone']}` with the same "
            f"options, Fashion-MNIST top-1 {transfer[1]['formats']['keras']['top1']:.4f}), same recipe and budget: "
            f"test mIoU {t['miou']:.4f} vs {keras_miou:.4f} from scratch; {transfer[0]['epochs_run']} epochs in "
            f"{transfer[0]['train_seconds']:.0f} s.",
        ]
    if baseline:
        b = baseline
        lines += [
            "",
            f"KerasHub `DeepLabV3ImageSegmenter` (DeepLabV3+: ASPP 6/12/18 on P5, P2 skip, 256-ch head; on our "
            f"backbone, no preset): test mIoU {b['miou']:.4f} (pixel accuracy {b['pixel_accuracy']:.4f}) after "
            f"{b['epochs']:.1f} epochs in {b['train_seconds']:.0f} s (our training time; ours did "
            f"{report['epochs_run']}); {b['params']:,} parameters, "
            f"{b['flops'] / 1e6:.0f} MFLOPs; batch-1 Keras {b['keras_latency_ms']:.1f} ms, fp32 LiteRT "
            f"{b['litert']['latency_ms']:.2f} ms (ours {f['tflite_fp32']['latency_ms']:.2f} ms fp32, "
            f"{f['tflite_int8']['latency_ms']:.2f} ms int8). LiteRT parity on 200 test images: fp32 logits max abs "
            f"diff {b['litert']['max_abs_diff']:.2e} (ours {ours['max_abs_diff']:.2e}).",
        ]
    body = "\n".join(lines)
    update_section("segmentation", body)
    print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
