"""Baseline for the segmentation benchmark: KerasHub's DeepLabV3+ on OUR backbone, data and budget
(the wall-clock time our default recipe trained for: DeepLabV3+'s 256-channel decoder at stride 4
takes about 5x our head's time per batch, so equal epochs would give it 5x our training time).

    python benchmarks/deeplab_baseline.py      # self-check: 20 s on 256 scenes, mIoU, LiteRT parity

What is KerasHub's and what is ours:
- ours: the image encoder (`toolkit.backbones.get`, raw pixels in, normalisation inside, {"P1".."P5"}),
  the data, the optimizer schedule and loss (`toolkit.tasks.segmentation.compile`: AdamW warm-up +
  cosine, cross-entropy + Dice), so that the comparison is about the decoder, and the metric;
- KerasHub's: `DeepLabV3Backbone` (ASPP on P5 with its example's dilation rates 6/12/18, bilinear x8 to
  the P2 low-level skip projected to 48 channels, a 256-channel 1x1 head conv, bilinear x4 to the
  input size) and `DeepLabV3ImageSegmenter` (its 1x1 classifier, logits out). No preset: nothing
  is downloaded. `DeepLabV3Backbone` reads only `image_encoder.inputs` and
  `image_encoder.pyramid_outputs`, so our functional backbone gets that attribute set to its outputs.

LiteRT: the segmenter's logits model is exported to a SavedModel and converted with builtin ops only,
exactly as ours is (toolkit.export.litert), and both logits are compared with Keras on the same images.
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from toolkit import backbones  # noqa: E402
from toolkit.export import litert  # noqa: E402
from toolkit.tasks import segmentation  # noqa: E402


def build_deeplab(backbone_name, image_shape, num_classes, **backbone_options):
    """KerasHub's DeepLabV3ImageSegmenter (DeepLabV3+: low-level P2 skip) on our backbone, logits out."""
    import keras_hub

    encoder = backbones.get(backbone_name, image_shape, **backbone_options)
    encoder.pyramid_outputs = encoder.output  # what DeepLabV3Backbone reads (a dict "P1".."P5")
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8, dilation_rates=[6, 12, 18],
        low_level_feature_key="P2", projection_filters=48, image_shape=tuple(image_shape),
    )  # fmt: skip
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=num_classes)


def litert_logits_diff(model, images, workdir, name):
    """Max abs diff between Keras logits and the fp32 LiteRT file's (builtin ops only), and the fraction of
    pixels whose arg-max differs; plus the file's batch-1 latency."""
    saved = os.path.join(workdir, f"{name}_saved_model")
    litert.export_saved_model(model, saved)
    path = os.path.join(workdir, f"{name}_fp32.tflite")
    with open(path, "wb") as f:
        f.write(litert.convert(saved, "fp32"))
    runtime = litert.LiteRTModel(path)
    got = runtime.predict(images.astype(np.float32), batch_size=16)
    want = np.asarray(model.predict(images.astype(np.float32), batch_size=64, verbose=0))
    return {
        "max_abs_diff": float(np.max(np.abs(got.astype(np.float64) - want))),
        "logit_range": float(np.max(np.abs(want))),
        "differing_pixels": float(np.mean(np.argmax(got, -1) != np.argmax(want, -1))),
        "latency_ms": runtime.latency_ms(images[:1].astype(np.float32))[0],
    }


def run(args, data, workdir, budget_seconds=None, train_epochs=None):
    """Trains the baseline with the recipe's args on `data` (SegmentationData) for `budget_seconds` of
    wall time (benchmarks/budget.py: its schedule planned for the steps that fit), or else for
    train_epochs (default args.epochs); returns its figures."""
    from benchmarks.budget import fit_within
    from toolkit import recipe
    from toolkit.data import segmentation as segmentation_data

    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_options(args.backbone_option, args.backbone)
    num_classes = len(data.class_names)
    model = build_deeplab(args.backbone, data.image_shape, num_classes, **options)

    def compile_for(steps):
        segmentation.compile(model, args.learning_rate, steps, dice_weight=args.dice_weight)

    train = segmentation_data.batches(data.train, args.batch_size, True, args.augment, args.seed)
    if budget_seconds:
        seconds, batches = fit_within(budget_seconds, model, compile_for, train.repeat())
        epochs = batches * args.batch_size / data.sizes["train"]
    else:
        epochs = train_epochs or args.epochs
        compile_for(epochs * math.ceil(data.sizes["train"] / args.batch_size))
        validation = segmentation_data.batches(data.validation, args.batch_size)
        start = time.perf_counter()
        model.fit(train, validation_data=validation, epochs=epochs, verbose=2)
        seconds = time.perf_counter() - start
    images, masks = data.arrays("test")
    predicted = segmentation.inference_model(model).predict(images.astype(np.float32), batch_size=64, verbose=0)
    found = segmentation.score(predicted, masks, num_classes)
    return {
        **found,
        "epochs": epochs,
        "train_seconds": seconds,
        "params": backbones.count_params(model),
        "flops": backbones.count_flops(model),
        "keras_latency_ms": litert.median_latency_ms(model.predict_on_batch, images[:1].astype(np.float32))[0],
        "litert": litert_logits_diff(model, images[:200], workdir, "deeplab"),
        "model": model,
    }


if __name__ == "__main__":
    import tempfile

    from recipes import segmentation as recipe
    from toolkit.data import segmentation as segmentation_data

    args = recipe.parse_args(["--epochs", "1"])
    data = segmentation_data.load("scenes")
    data.train, data.sizes["train"] = data.train.take(256), 256
    data.validation, data.test = data.validation.take(64), data.test.take(64)
    with tempfile.TemporaryDirectory() as tmp:
        found = run(args, data, tmp, budget_seconds=20)
    found.pop("model")
    print(found)
