"""Where the default segmenter loses mIoU, measured on the VALIDATION split (the test split stays for
the headline figures). The same class maps are re-scored several ways, each fixing one kind of error:

- foreground IoU: background against any item (is each item found and outlined?);
- one class per item: inside each true item, every pixel predicted as an item takes the item's most
  frequent predicted class (what a per-item vote would fix: items split between two classes);
- true class per item: those pixels take the item's true class (what perfect garment recognition
  would fix; what is left is outlines: missed or spilled pixels);
- the classifier's recognition per item: those pixels take a class drawn from the classification
  recipe's test confusion matrix for the item's true class (what the segmenter would score if it
  recognised garments as well as the dedicated classifier does on clean Fashion-MNIST items; mean of
  5 seeded draws);
- the classifier on the scene's own pixels: each item's visible pixels (its instance mask, so what
  overlapping items hide is gone) cut out onto black, framed as Fashion-MNIST frames an item
  (longest side 28, centred) and resized as the classification recipe resizes; those pixels take
  the class the classification model gives that crop. This is the recognition a dedicated classifier
  reaches on what the scenes actually show, by item size beside the segmenter's vote.

    python benchmarks/segmentation_diagnostics.py [RUN_DIR [CLASSIFIER_RUN]] [--crop-training-scenes N]
    # defaults saved_models/segmentation, saved_models/classification

--crop-training-scenes N (about 8 minutes for 16000 on 2 cores) also trains the classification
recipe's model (its defaults: `resnet` at the classifier run's input size, flip + shift, label
smoothing 0.1, 8 epochs) on the crops of N scenes composed from the training scenes' items, and
scores it on the same validation crops: the recognition a dedicated classifier reaches when it is
trained on what the scenes show and told which pixels are the item.

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
from PIL import Image  # noqa: E402

from benchmarks.results import machine, update_section  # noqa: E402
from toolkit import saving  # noqa: E402
from toolkit.data import detection as detection_data  # noqa: E402
from toolkit.export.pipeline import keras_outputs  # noqa: E402
from toolkit.metrics import segmentation as metrics  # noqa: E402


def true_items(truth, instances, predicted):
    """Every true item once: (scene index, its pixels predicted as some item, its true class)."""
    return [
        (i, (instances[i] == item) & (predicted[i] > 0), np.bincount(truth[i][instances[i] == item]).argmax())
        for i in range(len(instances)) for item in np.unique(instances[i]) if item
    ]  # fmt: skip


def per_item(predicted, items, item_class):
    """Inside each true item, the pixels predicted as some item take one class: item_class(true class,
    the predicted classes inside). Background predictions are left as they are."""
    fixed = predicted.copy()
    for i, inside, true_class in items:
        if inside.any():
            fixed[i][inside] = item_class(true_class, predicted[i][inside])
    return fixed


def with_classes(predicted, items, classes):
    """Inside each true item, the pixels predicted as some item take that item's class from `classes`
    (0..9, in `items`' order); unlike per_item, the class does not depend on the pixels inside."""
    fixed = predicted.copy()
    for (i, inside, _), found in zip(items, classes):
        fixed[i][inside] = found + 1
    return fixed


def vote(true_class, inside):
    return np.bincount(inside).argmax()


def true(true_class, inside):
    return true_class


def drawn_from(confusion, seed):
    """Item classes drawn from a classifier's confusion matrix (rows: true class 0..9; scene ids are +1)."""
    rows = confusion / confusion.sum(1, keepdims=True)
    rng = np.random.default_rng(seed)
    return lambda true_class, inside: 1 + rng.choice(len(rows), p=rows[true_class - 1])


def recognition_needed(predicted, truth, items, confusion, n, target=0.85, steps=7, draws=3):
    """The classifier's errors scaled by a in [0, 1] (confusion a*C + (1-a)*diag(C.sum(1))): bisects a
    for the item recognition (top-1) at which mIoU reaches `target`, with outlines as predicted."""
    identity = np.diag(confusion.sum(1))

    def score(a):
        mixed = a * confusion + (1 - a) * identity
        runs = [per_item(predicted, items, drawn_from(mixed, s)) for s in range(draws)]
        return np.mean([metrics.evaluate(r, truth, n)["miou"] for r in runs]), np.trace(mixed) / mixed.sum()

    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if score(middle)[0] >= target else (low, middle)
    return score(low)


def item_crops(examples):
    """Every item's visible pixels on black, framed as Fashion-MNIST frames an item: its box's longer
    side resized to 28 (bilinear), centred on a 28x28 canvas. Returns (crops (n, 28, 28, 1) uint8,
    true classes (n,) 0..9, longer sides of the visible pixels' boxes (n,) px), in true_items' order
    (scene, then instance)."""
    crops, classes, sides = [], [], []
    for example in examples:
        image, instance = example["image"][..., 0], example["instance_mask"][..., 0]
        for item in np.unique(instance):
            if not item:
                continue
            ys, xs = np.nonzero(instance == item)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = np.where(instance[y0:y1, x0:x1] == item, image[y0:y1, x0:x1], 0).astype(np.uint8)
            scale = 28 / max(crop.shape)
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            resized = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR))
            canvas = np.zeros((28, 28), np.uint8)
            top, left = (28 - resized.shape[0]) // 2, (28 - resized.shape[1]) // 2
            canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
            crops.append(canvas)
            classes.append(np.bincount(example["segmentation_mask"][..., 0][instance == item]).argmax() - 1)
            sides.append(max(y1 - y0, x1 - x0))
    return np.stack(crops)[..., None], np.asarray(classes), np.asarray(sides)


def classify_crops(model, crops):
    """A classification model on 28x28 crops, resized to its input as the recipe resizes."""
    import tensorflow as tf

    size = tuple(model.input_shape[1:3])
    pixels = crops.astype(np.float32)
    if size != (28, 28):
        pixels = tf.image.resize(pixels, size, antialias=True).numpy()
    return np.asarray(model.predict(pixels, batch_size=256, verbose=0)).argmax(-1)


def train_on_crops(scene_count, size, seed=0, epochs=8):
    """The classification recipe's model and defaults, trained on item_crops of `scene_count` scenes
    composed from the training scenes' items (Fashion-MNIST train[:54000]; validation scenes use the
    rest). Returns the model."""
    import math

    import keras
    import tensorflow as tf

    from toolkit.data import fashion_mnist, images as image_data, scenes
    from toolkit.tasks import classification

    keras.utils.set_random_seed(seed)
    items, labels = fashion_mnist.read_split(fashion_mnist.DEFAULT_SOURCE, "train")
    cut = int(len(items) * scenes.TRAIN_FRACTION)
    rng = np.random.default_rng(seed)
    composed = []
    for _ in range(scene_count):
        image, _, _, segmentation_mask, instance_mask = scenes.compose_scene(rng, items[:cut], labels[:cut])
        composed.append({"image": image, "segmentation_mask": segmentation_mask, "instance_mask": instance_mask})
    crops, classes, _ = item_crops(composed)
    pixels = np.round(tf.image.resize(crops.astype(np.float32), size, antialias=True).numpy()).astype(np.uint8)
    train = image_data.batches(tf.data.Dataset.from_tensor_slices((pixels, classes.astype(np.int32))), 128,
                               shuffle=True, augment=image_data.augmentation("flip_shift"), seed=seed)  # fmt: skip
    model = classification.build("resnet", (*size, 1), 10, head_dropout=0.2)
    classification.compile(model, 4e-3, epochs * math.ceil(len(crops) / 128), label_smoothing=0.1)
    model.fit(train, epochs=epochs, verbose=2)
    return model


def classifier_confusion(run):
    """The classification run's confusion matrix on its own test split, and its top-1."""
    stored = np.load(os.path.join(run, "test_data.npz"))
    labels, predicted = stored["labels"], stored["keras_outputs"].argmax(-1)
    confusion = np.zeros((stored["keras_outputs"].shape[1],) * 2)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion, float(np.mean(labels == predicted))


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="saved_models/segmentation", help="a segmentation run on the scenes")
    parser.add_argument("classifier", nargs="?", default="saved_models/classification",
                        help="a Fashion-MNIST classification run")  # fmt: skip
    parser.add_argument("--crop-training-scenes", type=int, default=0, metavar="N",
                        help="also train the classification recipe on the item crops of N training scenes (0: no)")
    args = parser.parse_args(argv)
    run, classifier = args.run, args.classifier
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
    items = true_items(truth, instances, predicted)
    confusion, top1 = classifier_confusion(classifier)
    drawn = [metrics.evaluate(per_item(predicted, items, drawn_from(confusion, s)), truth, n) for s in range(5)]
    rows = [
        ("as predicted (the metric)", metrics.evaluate(predicted, truth, n)),
        ("one class per item (vote inside each true item)", metrics.evaluate(per_item(predicted, items, vote), truth, n)),
        ("true class per item (only outlines wrong)", metrics.evaluate(per_item(predicted, items, true), truth, n)),
        (f"item classes as the classification recipe recognises them (its test top-1 {top1:.4f}; mean of 5 draws)",
         {k: float(np.mean([d[k] for d in drawn])) for k in ("miou", "pixel_accuracy")}),
    ]  # fmt: skip
    crops, crop_classes, sides = item_crops(examples)
    classifier_model = saving.load_model(os.path.join(classifier, "model.keras"), compile=False)
    recognised = classify_crops(classifier_model, crops)
    crop_top1 = float(np.mean(recognised == crop_classes))
    rows.append((
        f"item classes as the classification model recognises each item's own visible pixels (top-1 {crop_top1:.4f})",
        metrics.evaluate(with_classes(predicted, items, recognised), truth, n),
    ))  # fmt: skip
    trained = None
    if args.crop_training_scenes:
        crop_model = train_on_crops(args.crop_training_scenes, tuple(classifier_model.input_shape[1:3]))
        trained = classify_crops(crop_model, crops)
        rows.append((
            f"the same with the classification recipe trained on the crops of {args.crop_training_scenes} training "
            f"scenes (top-1 {np.mean(trained == crop_classes):.4f})",
            metrics.evaluate(with_classes(predicted, items, trained), truth, n),
        ))  # fmt: skip
    votes = np.array([np.bincount(predicted[i][inside]).argmax() - 1 if inside.any() else -1
                      for i, inside, _ in items])  # fmt: skip
    both_wrong = float(np.mean((votes != crop_classes) & (recognised != crop_classes)))
    bins = [(0, 28), (28, 36), (36, 44), (44, 52), (52, 65)]
    columns = [("segmenter (vote)", votes), ("classifier on the crop", recognised)]
    if trained is not None:
        columns.append(("classifier trained on crops", trained))
    by_size = [
        f"| {name} | {int(s.sum())} | "
        + " | ".join(f"{np.mean(found[s] == crop_classes[s]):.3f}" for _, found in columns)
        + " |"
        for name, s in [*((f"{low}-{high - 1} px", (sides >= low) & (sides < high)) for low, high in bins),
                        ("all", np.ones(len(sides), bool))]
    ]  # fmt: skip
    needed_miou, needed_top1 = recognition_needed(predicted, truth, items, confusion, n)
    needed_80 = recognition_needed(predicted, truth, items, confusion, n, target=0.80)
    foreground = metrics.evaluate(np.minimum(predicted, 1), np.minimum(truth, 1), 2)["per_class_iou"][1]
    fragmented = np.mean([len(np.unique(predicted[i][inside])) > 1 for i, inside, _ in items])
    names = ["background", *data.class_names]
    lines = [
        "## Segmentation diagnostics (issues 4, 17): where the segmenter loses mIoU (validation split)",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/segmentation_diagnostics.py', *argv])}` "
        f"({time.strftime('%Y-%m-%d')}, {machine()}); run `{report['command']}`, "
        f"{len(images)} validation scenes; classifier `{classifier}`. Not used to choose anything.",
        "",
        "| class maps scored | mIoU | pixel accuracy |",
        "|---|---|---|",
        *[f"| {name} | {r['miou']:.4f} | {r['pixel_accuracy']:.4f} |" for name, r in rows],
        "",
        f"Foreground IoU (background against any item): {foreground:.4f}. Items whose predicted pixels hold more "
        f"than one class: {fragmented:.1%}.",
        "",
        "Item recognition by the item's longer side (the box of its visible pixels): the segmenter's vote inside the "
        "item against the classification model on the item's visible pixels (crop row above):",
        "",
        "| longer side | items | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
        *by_size,
        "",
        f"Items both get wrong: {both_wrong:.1%}.",
        "",
        f"Item recognition the target needs: with these outlines, mIoU reaches 0.85 ({needed_miou:.4f}) "
        f"when items are recognised with top-1 {needed_top1:.4f} (the classifier's errors scaled down, "
        f"bisected), against the classification recipe's {top1:.4f} on clean Fashion-MNIST test items; "
        f"it reaches 0.80 (issue 17's target, {needed_80[0]:.4f}) at top-1 {needed_80[1]:.4f}.",
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
