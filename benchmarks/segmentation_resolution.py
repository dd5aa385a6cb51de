"""Issue 17: does a thinner backbone at twice the resolution segment small items better at the same FLOPs?

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/segmentation_resolution.py [--variants default,hires] [--epochs 8]

Validation only (no test split is scored): each variant trains from scratch with the segmentation recipe's
data (fresh scenes), loss, schedule and flip, then its class-map model is converted to LiteRT fp32 and int8
and timed at batch 1 on one XNNPACK thread.
- default: the transfer benchmark's scratch model (`resnet` widths 24-192, depths 1,1,2,2, stem 16, FPN/head 96);
- hires: the image upsampled 2x (bilinear) inside the model, `resnet` at half those widths with stem 8,
  FPN/head 48; the head reads P2 (stride 2 of the scene) and upsamples its logits 2x.
The experiment is not a recipe option: upsampling outside the backbone breaks the backbone contract
(DESIGN.md: level n has stride 2^n of the model's input), which the head and the pretraining targets rely on.
A design within it keeps more resolution inside the backbone and reads P1 (stride 2).
TF_ENABLE_ONEDNN_OPTS=0: on AMD EPYC (AVX-512) oneDNN's convolutions crash in training with the 8-channel stem
(tensorflow/tensorflow#57749); this makes the two variants' times comparable. Prints a table; RESULTS.md's
"a thinner backbone at twice the resolution" has the figures. One job at a time on an idle machine.
"""

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESNET = dict(depths=(1, 1, 2, 2))
VARIANTS = {  # name: (input upsampling, resnet widths, stem width, FPN and head channels)
    "default": (1, (24, 48, 96, 192), 16, 96),
    "hires": (2, (12, 24, 48, 96), 8, 48),
}


def build(variant, image_shape, num_classes):
    """default: the segmentation recipe's own model (`segmentation.build`); hires: its parts with the image
    upsampled first, the head on P2 at stride 4 // scale."""
    import keras
    from keras import layers

    from toolkit import backbones
    from toolkit.heads.segmentation import segmentation_head
    from toolkit.necks import fpn
    from toolkit.tasks import segmentation

    scale, widths, stem, channels = VARIANTS[variant]
    if scale == 1:
        return segmentation.build("resnet", image_shape, num_classes, channels, channels, 2, widths=widths,
                                  stem_width=stem, **RESNET)  # fmt: skip
    inputs = keras.Input(image_shape, name="image")
    x = layers.UpSampling2D(scale, interpolation="bilinear", name="input_upsample")(inputs)
    shape = (image_shape[0] * scale, image_shape[1] * scale, image_shape[2])
    features = backbones.get("resnet", shape, widths=widths, stem_width=stem, **RESNET)(x)
    logits = segmentation_head(fpn(features, channels=channels)[segmentation.LEVEL], num_classes, channels, 2,
                               4 // scale)  # fmt: skip
    return keras.Model(inputs, logits, name=f"segmenter_{variant}")


def litert_ms(model, calibration, sample):
    """Batch-1 ms of the class-map model's LiteRT fp32 and int8 files on one XNNPACK thread, timed as
    every other benchmark times them (`LiteRTModel.latency_ms`)."""
    from toolkit.export import litert
    from toolkit.tasks import segmentation

    found = {}
    with tempfile.TemporaryDirectory() as folder:
        litert.export_saved_model(segmentation.inference_model(model), folder)
        for quantization in ("fp32", "int8"):
            path = os.path.join(folder, f"{quantization}.tflite")
            with open(path, "wb") as f:
                f.write(litert.convert(folder, quantization, calibration_inputs=calibration))
            found[quantization] = litert.LiteRTModel(path, threads=1).latency_ms(sample)[0]
    return found


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="default,hires", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes-per-epoch", type=int, default=None, help="fresh training scenes per epoch (default 8000)")
    args = p.parse_args(argv)
    import keras
    import numpy as np

    from toolkit.backbones.flops import count_flops
    from toolkit.data import segmentation as segmentation_data
    from toolkit.tasks import segmentation

    rows = []
    for variant in args.variants.split(","):
        keras.utils.set_random_seed(args.seed)
        data = segmentation_data.load("scenes", scenes_per_epoch=args.scenes_per_epoch, seed=args.seed)
        num_classes = len(data.class_names)
        model = build(variant, data.image_shape, num_classes)
        train = segmentation_data.batches(data.train, 32, not data.fresh_train, "flip", args.seed)
        validation = segmentation_data.batches(data.validation, 32)
        segmentation.compile(model, 3e-3, args.epochs * math.ceil(data.sizes["train"] / 32))
        start = time.perf_counter()
        history = model.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)
        seconds = time.perf_counter() - start
        images, _ = data.arrays("validation")
        ms = litert_ms(model, images[:100].astype(np.float32), images[:1].astype(np.float32))
        curve = " ".join(f"{v:.3f}" for v in history.history["val_miou"])
        rows.append(f"| {variant} | {model.count_params():,} | {count_flops(model) / 1e6:.1f} | {curve} | "
                    f"{history.history['val_miou'][-1]:.4f} | {seconds:.0f} | {ms['fp32']:.3f} / {ms['int8']:.3f} |")
    print("| model | params | MFLOPs (training graph) | val mIoU by epoch | final | train s | LiteRT fp32 / int8 ms |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
