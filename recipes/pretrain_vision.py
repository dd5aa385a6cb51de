"""Vision pretraining: a backbone learns garments at the sizes and places they take in scenes.

    toolkit pretrain vision                            # writes the preset saved_models/pretrain_vision/
    toolkit run detection --backbone-preset saved_models/pretrain_vision
    toolkit run segmentation --backbone-preset saved_models/pretrain_vision

The classifier's backbone knows centred 28-px items; the scenes show them at 24-64 px anywhere on a
textured canvas, several at a time. Here every pass composes fresh scenes the way Fashion Scenes
does, from the items the training scenes draw on (Fashion-MNIST train[:54000]; validation scenes
from train[54000:]; the test file is never read), and a 1x1 probe on each of P2..P5 learns the
share of each class in every cell (toolkit.tasks.pretraining). The probes are dropped: the folder
is a backbone preset (config.json, model.weights.h5, metadata.json with the data, the validation
figures and the time it took) that every vision recipe starts from.
"""

import math

import keras

from toolkit import recipe, tasks, training
from toolkit.data import fashion_mnist, scenes
from toolkit.errors import ToolkitError
from toolkit.tasks import pretraining

# 16 passes (128,000 scenes): a detector fine-tuned from it reached validation mAP 0.683 against 0.664
# from the 8-pass preset (the same 12 epochs on fresh scenes; benchmarks/RESULTS.md, selection).
DEFAULTS = dict(data=fashion_mnist.DEFAULT_SOURCE, backbone="resnet", epochs=16, batch_size=32, learning_rate=3e-3,
                patience=3)  # fmt: skip
NUM_CLASSES = len(fashion_mnist.CLASS_NAMES) + 1  # background + the garments
MAX_SIDE = 64  # compose_scene's largest item side


def parse_args(argv=None):
    p = recipe.parser("pretrain_vision", __doc__.splitlines()[0], prog="toolkit pretrain vision", **DEFAULTS)
    p.set_defaults(name="pretrain_vision")
    p.add_argument("--scenes-per-epoch", type=recipe.positive_int, default=8000, help="fresh scenes composed per pass")
    p.add_argument("--validation-scenes", type=recipe.positive_int, default=1000)
    p.add_argument("--canvas", type=recipe.positive_int, default=scenes.CANVAS, help="scene size (divisible by 32)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    args = p.parse_args(argv)
    if args.canvas < MAX_SIDE:
        raise ToolkitError(f"--canvas {args.canvas} is smaller than the largest item pasted ({MAX_SIDE} px)")
    return recipe.pyramid_defaults(args)  # the detection/segmentation backbone, so the preset fits them


def main(argv=None):
    args = parse_args(argv)
    training.distribute(args.distribute)  # before any model or TensorFlow op
    keras.utils.set_random_seed(args.seed)
    options = recipe.backbone_config(args)

    # Data: training items only (the split the training scenes use), composed into fresh scenes each pass.
    items, labels = fashion_mnist.read_split(args.data, "train")
    cut = int(len(items) * scenes.TRAIN_FRACTION)
    train = pretraining.batches(
        scenes.pretraining_scenes(items[:cut], labels[:cut], args.scenes_per_epoch, args.seed, args.canvas),
        args.batch_size, NUM_CLASSES,
    )  # fmt: skip
    validation = pretraining.batches(
        scenes.pretraining_scenes(items[cut:], labels[cut:], args.validation_scenes, args.seed + 1, args.canvas,
                                  fresh=False),
        args.batch_size, NUM_CLASSES,
    )  # fmt: skip

    model = pretraining.build(args.backbone, (args.canvas, args.canvas, 1), NUM_CLASSES, **options)
    backbone = tasks.backbone_of(model)
    recipe.start_from_preset(backbone, args)
    steps = args.epochs * math.ceil(args.scenes_per_epoch / args.batch_size)
    pretraining.compile(model, args.learning_rate, steps, args.weight_decay)

    def describe(history):
        return {
            "data": f"Fashion Scenes composed afresh each pass from Fashion-MNIST train[:{cut}] ({args.data}); "
                    f"validation: {args.validation_scenes} scenes of train[{cut}:]; the test file is not read",
            "objective": "per-cell class shares (background + 10 garments) on P2..P5, 1x1 softmax probes",
            "canvas": args.canvas,
            "scenes_seen": args.scenes_per_epoch * len(history["loss"]),
        }  # fmt: skip

    preset, _ = recipe.pretrain("vision", args, argv, model, backbone, train, validation, describe)
    return preset


if __name__ == "__main__":
    main()
