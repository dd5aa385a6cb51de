"""Multi-task: one backbone feeding detection, segmentation and classification heads, one LiteRT file.

    python recipes/multitask.py                        # the embedded default (composed scenes)
    toolkit run multitask --heads detection,segmentation --head-weights detection=1,segmentation=0.5
    toolkit run multitask --heads classification       # one head: that task's single-task model

Data (scenes: boxes, class masks and the classes present) -> backbone -> FPN -> every head,
trained jointly with model.fit (one loss per head, weighted); the exported model returns detections
(decoded, NMS inside), a uint8 class map and class probabilities from one file. Each head is scored
on the whole held-out test split in every format (saved_models/multitask/report.json).
"""

import math

import keras
import numpy as np

from toolkit import recipe, tasks, training
from toolkit.data import detection as detection_data
from toolkit.errors import ToolkitError
from toolkit.export import report
from toolkit.tasks import multitask

DEFAULTS = dict(data="scenes", backbone="resnet", epochs=8, batch_size=32, learning_rate=3e-3, patience=4)
MAX_DETECTIONS = 100  # boxes the exported model returns per image


def head_weights(text):
    weights = {}
    for pair in filter(None, text.split(",")):
        head, _, value = pair.partition("=")
        try:
            weights[head] = float(value)
        except ValueError:
            raise ToolkitError(f"--head-weights wants HEAD=NUMBER pairs, got {pair!r}") from None
    if weights:  # an empty --head-weights: every head weighs 1
        multitask.check_heads(weights)
    return weights


def parse_args(argv=None):
    p = recipe.parser("multitask", __doc__.splitlines()[0], **DEFAULTS)
    p.add_argument("--heads", default=",".join(multitask.HEADS), help="comma-separated subset of the heads")
    # Segmentation weighs 2: with equal weights its head lost 3.2 pt of validation mIoU against the
    # single-task model, with 2 it is within 1.1 pt and the other heads gain (benchmarks/RESULTS.md,
    # "Multi-task head weights, chosen on the validation split").
    p.add_argument("--head-weights", default="segmentation=2",
                   help="loss weight per head (others weigh 1), e.g. detection=1,segmentation=0.5")  # fmt: skip
    recipe.add_pyramid_options(p, "none, flip or flip_scale")
    p.add_argument("--max-objects", type=recipe.positive_int, default=16)
    recipe.add_split_options(p)
    args = p.parse_args(argv)
    args.heads = multitask.check_heads(h.strip() for h in args.heads.split(",") if h.strip())
    args.head_weights = head_weights(args.head_weights)
    return recipe.pyramid_defaults(args)


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_config(args)

    # Data: detection splits that also carry class masks; targets for every head encoded in tf.data.
    data = detection_data.load(args.data, data_dir=args.data_dir, image_size=args.image_size,
                               scenes_per_epoch=args.scenes_per_epoch, seed=args.seed, **recipe.split_fractions(args))  # fmt: skip
    num_classes = len(data.class_names)
    encode = multitask.target_encoder(data.image_shape, num_classes, args.heads)
    augment = detection_data.augmentation(args.augment, data.image_shape[0], seed=args.seed)
    train = detection_data.batches(data.train, args.batch_size, args.max_objects, not data.fresh_train, augment,
                                   args.seed).map(encode)
    validation = detection_data.batches(data.validation, args.batch_size, args.max_objects).map(encode)

    model = multitask.build(args.backbone, data.image_shape, num_classes, args.heads, args.neck_channels,
                            args.head_channels, args.head_depth, **options)  # fmt: skip
    backbone = tasks.backbone_of(model)
    recipe.start_from_preset(backbone, args)
    steps = args.epochs * math.ceil(data.sizes["train"] / args.batch_size)
    multitask.compile(model, args.learning_rate, steps, head_weights=args.head_weights)
    recipe.check_splits(data)  # and, below, images with more objects than training or the detector keeps
    if {"detection", "classification"} & set(args.heads):
        recipe.check_max_objects(data, args.max_objects)
    if "detection" in args.heads:
        recipe.warn_crowded(data.object_counts("test"), MAX_DETECTIONS, "test",
                            f"the detector keeps at most {MAX_DETECTIONS} boxes, so their recall stays below 1")  # fmt: skip

    with recipe.TrainingRun("multitask", args, argv, options) as run:
        run.fit(model, train, validation)

        exported = multitask.inference_model(model, MAX_DETECTIONS)
        test_images, ground_truth = data.ground_truth("test")
        masks = np.stack([e["segmentation_mask"][..., 0] for e in data.test.as_numpy_iterator()]) \
            if "segmentation" in args.heads else None  # fmt: skip
        labels = multitask.labels_from_ground_truth(ground_truth, masks, num_classes, args.heads)
        formats, outputs = run.export(exported, test_images, labels, data.calibration_images(args.calibration_samples),
                                      class_names=data.class_names, intensity=data.intensity)

        if "detection" in args.heads:
            report.plot_detections(test_images, outputs, ground_truth, data.class_names, run.file("detections.png"))
        if "segmentation" in args.heads:
            report.plot_segmentation(test_images, outputs["class_map"], masks, ["background", *data.class_names],
                                     run.file("segmentation.png"))  # fmt: skip
        run.conclude(
            exported,
            heads=list(args.heads),
            head_weights=args.head_weights,
            head_metrics={h: multitask.HEAD_METRICS[h] for h in args.heads},
            head=f"one backbone + FPN ({args.neck_channels} ch) feeding: {', '.join(args.heads)}",
            dataset=data.source,
            split_sizes=data.sizes,
            images_per_second=run.examples_per_second(data.sizes["train"]),
            outputs=sorted(outputs),
        )
    return run.result

if __name__ == "__main__":
    main()
