"""Object detection: Fashion-MNIST scenes on a shared backbone, NMS inside a verified LiteRT file.

    python recipes/detection.py                        # the embedded default (composed scenes)
    toolkit run detection --data coco:annotations.json,images=photos/ --image-size 256
    toolkit run detection --backbone-preset saved_models/pretrain_vision   # after toolkit pretrain vision

Data -> backbone -> FPN -> anchor-free head -> model.fit on encoded targets; the exported model
adds box decoding and NMS (keras.ops) and returns fixed-size detections. .keras, SavedModel,
LiteRT fp32 and int8 are each scored (COCO mAP) on the whole held-out test split and written to
saved_models/detection/ with report.json and a PNG of test detections.
"""

import math

import keras

from toolkit import recipe, tasks, training
from toolkit.data import detection as detection_data
from toolkit.export import report
from toolkit.tasks import detection

DEFAULTS = dict(data="scenes", backbone="resnet", epochs=12, batch_size=32, learning_rate=3e-3, patience=4)


def parse_args(argv=None):
    p = recipe.parser("detection", __doc__.splitlines()[0], **DEFAULTS)
    # 96-channel neck and head: validation mAP 0.698 against 0.664 with 48 (from the 8-pass preset, fresh
    # scenes, 12 epochs; 226 against 145 MFLOPs); garment identity has to pass the FPN's 1x1 laterals.
    recipe.add_pyramid_options(p, "none, flip or flip_scale", channels=96)
    p.add_argument("--max-objects", type=recipe.positive_int, default=16, help="objects kept per training image")
    p.add_argument("--max-detections", type=recipe.positive_int, default=100)
    p.add_argument("--score-threshold", type=float, default=0.05)
    p.add_argument("--iou-threshold", type=float, default=0.5)
    recipe.add_split_options(p)
    args = p.parse_args(argv)
    return recipe.pyramid_defaults(args)


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_config(args)

    # Data: unbatched {"image", "boxes" (xyxy pixels), "classes"} splits; training batches carry the
    # head's targets (heatmap peaks and edge distances), encoded inside tf.data.
    data = detection_data.load(args.data, data_dir=args.data_dir, image_size=args.image_size,
                               scenes_per_epoch=args.scenes_per_epoch, seed=args.seed, **recipe.split_fractions(args))  # fmt: skip
    num_classes = len(data.class_names)
    encode = detection.target_encoder(data.image_shape, num_classes)
    augment = detection_data.augmentation(args.augment, data.image_shape[0], seed=args.seed)
    train = detection_data.batches(data.train, args.batch_size, args.max_objects, not data.fresh_train, augment,
                                   args.seed).map(encode)
    validation = detection_data.batches(data.validation, args.batch_size, args.max_objects).map(encode)

    # Model: a shared backbone, an FPN neck and the anchor-free head; optionally another run's backbone.
    model = detection.build(args.backbone, data.image_shape, num_classes, args.neck_channels, args.head_channels,
                            args.head_depth, **options)  # fmt: skip
    backbone = tasks.backbone_of(model)
    recipe.start_from_preset(backbone, args)
    steps = args.epochs * math.ceil(data.sizes["train"] / args.batch_size)
    detection.compile(model, args.learning_rate, steps)
    # Say so, once, when splits are tiny or images hold more objects than training or the detector keeps.
    recipe.check_splits(data)
    recipe.check_max_objects(data, args.max_objects)
    recipe.warn_crowded(data.object_counts("test"), args.max_detections, "test",
                        f"the detector keeps at most {args.max_detections} boxes, so their recall stays below 1",
                        "--max-detections")  # fmt: skip

    with recipe.TrainingRun("detection", args, argv, options) as run:
        run.fit(model, train, validation)

        # The exported model decodes and suppresses inside the graph; every format is scored on the test split.
        detector = detection.inference_model(model, args.max_detections, args.score_threshold, args.iou_threshold)
        test_images, ground_truth = data.ground_truth("test")
        labels = detection.pack_ground_truth(ground_truth)
        formats, outputs = run.export(detector, test_images, labels, data.calibration_images(args.calibration_samples),
                                      class_names=data.class_names, intensity=data.intensity)

        report.plot_detections(test_images, outputs, ground_truth, data.class_names, run.file("detections.png"))
        per_class = detection.score(outputs, labels, num_classes)["per_class_ap"]
        run.conclude(
            detector,
            head=f"FPN ({args.neck_channels} ch) + CenterNet/TTFNet-style heatmap and GIoU edge head at stride 4, "
            "keras.ops decoding and greedy NMS in the graph",
            dataset=data.source,
            split_sizes=data.sizes,
            images_per_second=run.examples_per_second(data.sizes["train"]),
            per_class_ap={data.class_names[int(k)]: v for k, v in per_class.items()},
            figures=["detections.png"],
        )
    return run.result

if __name__ == "__main__":
    main()
