"""What every recipe's command line shares: the common flags, backbone options, the run's command."""

import argparse
import ast
import os
import shlex
import sys

from toolkit.errors import ToolkitError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ToolkitError (one clear line) instead of printing usage and exiting.
    A recipe's parser (`parser`) also settles the backbone: --backbone-preset's, or --backbone's."""

    backbone_default = None

    def error(self, message):
        raise ToolkitError(f"{self.prog}: {message}")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if self.backbone_default is not None:
            _settle_backbone(parsed, self.backbone_default)
        return parsed


def _settle_backbone(args, default):
    """With --backbone-preset, the preset names the backbone and its options: a --backbone or
    --backbone-option that says otherwise is refused here, before any data is loaded."""
    if not args.backbone_preset:
        args.backbone = args.backbone or default
        return
    from toolkit.backbones import presets

    preset = presets.read(args.backbone_preset)
    if args.backbone not in (None, preset.backbone):
        raise ToolkitError(
            f"--backbone {args.backbone} contradicts --backbone-preset {args.backbone_preset}, "
            f"a {preset.backbone!r} backbone: drop one"
        )
    if args.backbone_option:
        raise ToolkitError(
            f"--backbone-option {args.backbone_option[0]}: the preset {args.backbone_preset} fixes its backbone's "
            "options (see its config.json)"
        )
    args.backbone = preset.backbone
    args.backbone_preset = preset.path  # absolute: report.json and resume name the same folder from anywhere


def parser(name, description, prog=None, **defaults):
    p = ArgumentParser(prog=prog or f"toolkit run {name}", description=description)
    p.backbone_default = defaults.get("backbone", "edgenet_lite")
    p.add_argument("--data", default=defaults.get("data"), help="data source (see toolkit.data)")
    p.add_argument("--data-dir", default=None, help="where TFDS keeps prepared datasets")
    p.add_argument("--backbone", default=None, help=f"see `toolkit backbones` (default {p.backbone_default})")
    p.add_argument(
        "--backbone-option", action="append", default=[], metavar="KEY=VALUE",
        help="backbone builder option, e.g. width=0.75 (Python literal values)",
    )  # fmt: skip
    p.add_argument(
        "--backbone-preset", default=None, metavar="DIR",
        help="start from a backbone preset folder (`toolkit pretrain`, a run's backbone/, a KerasHub preset): "
        "it names the backbone and its options",
    )  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=defaults.get("epochs", 10))
    p.add_argument("--batch-size", type=positive_int, default=defaults.get("batch_size", 128))
    p.add_argument("--learning-rate", type=positive_float, default=defaults.get("learning_rate", 3e-3))
    p.add_argument("--patience", type=positive_int, default=defaults.get("patience", 3))
    p.add_argument("--output", default="saved_models", help="run folders land in OUTPUT/<recipe>")
    p.add_argument("--name", default=name, type=run_name, help="run folder name (default: the recipe's name)")
    p.add_argument("--threads", type=positive_int, default=2, help="LiteRT interpreter threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", default="auto", help="model.fit verbosity: auto, 0, 1, 2")
    p.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run of this name (a plain re-run does too; this refuses to start afresh)",
    )  # fmt: skip
    p.add_argument("--restart", action="store_true", help="discard an interrupted run's state and start afresh")
    p.add_argument(
        "--distribute", action="store_true",
        help="data-parallel over every local device: keras.distribution.DataParallel (jax), MirroredStrategy (tf)",
    )  # fmt: skip
    return p


# The backbone of every recipe on the FPN neck (detection, segmentation, multitask), so that they share
# weights (--backbone-preset, the multi-task model) and their benchmarks compare like for like. Wider
# low-resolution stages than the classifier's default: telling shirts from pullovers is the hard part
# of the scenes, and channels at stride 8-32 are cheap next to the stride-4 neck and heads.
PYRAMID_BACKBONE_OPTIONS = {"resnet": ["widths=(24, 48, 96, 192)", "depths=(1, 1, 2, 2)"]}


def add_pyramid_options(p, augmentations, channels=48):
    """The flags every recipe on the FPN neck shares: input size, augmentation, neck and head sizes
    (`channels` each by default)."""
    p.add_argument("--image-size", type=positive_int, default=None, help="resize images (square)")
    p.add_argument("--augment", default="flip", help=augmentations)
    p.add_argument("--neck-channels", type=positive_int, default=channels, help="FPN channels")
    p.add_argument("--head-channels", type=positive_int, default=channels)
    p.add_argument("--head-depth", type=positive_int, default=2, help="separable convs per head")
    p.add_argument("--calibration-samples", type=positive_int, default=200, help="int8 calibration images")
    p.add_argument("--scenes-per-epoch", type=non_negative_int, default=None,
                   help="Fashion Scenes only: train on this many scenes composed afresh each epoch from the "
                   "training items (default 8000; 0: the 8,000 stored scenes)")  # fmt: skip
    return p


def add_split_options(p):
    """--validation-fraction and --test-fraction: what every image recipe carves from the training data
    when its source has no such split (a COCO file without val= or test=, a folder without test/)."""
    p.add_argument("--validation-fraction", type=fraction, default=0.1,
                   help="share of the training data held out for validation where the source has none")  # fmt: skip
    p.add_argument("--test-fraction", type=fraction, default=0.1,
                   help="share held out for the test where the source has no test split")  # fmt: skip
    return p


def split_fractions(args):
    """{"validation_fraction", "test_fraction"} from the parsed flags, for a data loader."""
    if args.validation_fraction + args.test_fraction >= 1:
        raise ToolkitError(
            f"--validation-fraction {args.validation_fraction:g} and --test-fraction {args.test_fraction:g} sum to "
            "1 or more: nothing is left to train on"
        )
    return {"validation_fraction": args.validation_fraction, "test_fraction": args.test_fraction}


# A validation or test split smaller than this gives figures that one image more or less swings by 10 points.
SMALL_SPLIT = 10


def check_splits(data, file=None):
    """Every image recipe's look at its splits before training: an empty validation or test split is
    an error, one under SMALL_SPLIT images a one-line warning with its size."""
    for split, flag in (("validation", "--validation-fraction"), ("test", "--test-fraction")):
        size = data.sizes[split]
        if not size:
            raise ToolkitError(f"the {split} split is empty: pass {flag} above 0 or a {split} file")
        if size < SMALL_SPLIT:
            warn(f"the {split} split holds {size} image{'s' * (size != 1)}: its figures mean little; "
                 f"pass {flag} or a {split} file", file)  # fmt: skip


def warn_crowded(counts, limit, what, consequence, flag=None, file=None):
    """One line when images hold more objects than `limit` boxes can carry: how many, the largest
    count and, with `flag`, the value to pass. Nothing is ever cut silently."""
    counts = [int(c) for c in counts]
    over = [c for c in counts if c > limit]
    if over:
        hint = f"; pass {flag} {max(over)}" if flag else ""
        warn(f"{len(over)} {what} image{'s' * (len(over) != 1)} hold{'s' * (len(over) == 1)} more than {limit} "
             f"objects (up to {max(over)}): {consequence}{hint}", file)  # fmt: skip


def check_max_objects(data, max_objects, file=None):
    """Detection training pads or cuts each image's objects to --max-objects: say so when it cuts."""
    counts = [c for split in ("train", "validation") for c in data.object_counts(split)]
    warn_crowded(counts, max_objects, "training/validation", f"only the first {max_objects} of each are trained on",
                 "--max-objects", file)  # fmt: skip


def warn(message, file=None):
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


def pyramid_defaults(args):
    """Parsed args of a pyramid recipe with the shared backbone's options when none were given."""
    if not args.backbone_option and not args.backbone_preset:
        args.backbone_option = list(PYRAMID_BACKBONE_OPTIONS.get(args.backbone, []))
    return args


# Options that change how a run is watched, not what it computes: a resumed run may differ in them.
NOT_IN_CONFIG = ("verbose", "threads", "resume", "restart")


def run_folder(args):
    """The run's folder (`toolkit.runs.RunFolder`) under --output/--name, resuming an interrupted
    run of the same name when its options were the same (see --resume, --restart)."""
    from toolkit.runs import RunFolder

    if args.resume and args.restart:
        raise ToolkitError("--resume and --restart contradict each other: pass one")
    config = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_CONFIG}
    return RunFolder(args.output, args.name, config=config, restart=args.restart, require_resume=args.resume)


def _positive(cast, what):
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < float("inf"):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    parse.__name__ = f"positive {what}"
    return parse


def run_name(text):
    """A run folder name that stays inside --output (no path, no '..', not hidden)."""
    from toolkit.runs import check_name

    try:
        return check_name(text)
    except ToolkitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


positive_int = _positive(int, "integer")
positive_float = _positive(float, "number")


def non_negative_int(text):
    if text.strip().isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {text!r}")


def fraction(text):
    """A split fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < 1:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def backbone_options(pairs, backbone=None):
    """['width=0.75', 'depths=(1,1,1,1)'] -> {'width': 0.75, 'depths': (1, 1, 1, 1)}; literals only.

    With `backbone`, its name and the option names are checked here, before any data is loaded."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ToolkitError(f"backbone option {pair!r} must look like KEY=VALUE")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text  # a bare word such as a file path
    if backbone is not None:
        from toolkit.backbones.registry import check_options

        check_options(backbone, options)
    return options


def backbone_config(args):
    """The backbone's options for a recipe's parsed flags: the preset's (complete, from its
    config.json) with --backbone-preset, else --backbone-option's, checked against the builder."""
    if args.backbone_preset:
        from toolkit.backbones import presets

        options = dict(presets.read(args.backbone_preset).options)
        options.pop("vocabulary_size", None)  # a text recipe passes its vocabulary's size: the preset's (checked)
        return options
    return backbone_options(args.backbone_option, args.backbone)


def start_from_preset(backbone, args):
    """Loads --backbone-preset's weights into the task model's backbone (a no-op without one)."""
    if args.backbone_preset:
        from toolkit.backbones import presets

        presets.load_weights(backbone, args.backbone_preset)


def preset_vocabulary(args):
    """A text preset's vocabulary (its embedding rows' WordPieces), which the run must tokenise with;
    None without a preset. A vision or graph preset for a text recipe is refused here."""
    if not args.backbone_preset:
        return None
    from toolkit.backbones import presets
    from toolkit.data import tokenizer

    preset = presets.read(args.backbone_preset)
    if preset.vocabulary is None:
        raise ToolkitError(f"--backbone-preset {args.backbone_preset} is a {preset.kind} preset, not a text one")
    return tokenizer.load_vocabulary(os.path.dirname(preset.vocabulary), os.path.basename(preset.vocabulary))


def verbosity(text):
    return text if text == "auto" else int(text)


def command_line(recipe, argv, verb="run"):
    """The command that made a run, as a user would type it: `toolkit VERB RECIPE ARGS...`."""
    return shlex.join(["toolkit", verb, recipe, *(sys.argv[3:] if argv is None else argv)])


class TrainingRun:
    """The steps every recipe shares after building its data and model, in its run folder:

        with recipe.TrainingRun("detection", args, argv, options) as run:
            history = run.fit(model, train, validation)     # training.fit; keeps the backbone's weights
            formats, outputs = run.export(detector, test_images, test_labels, calibration, class_names=...)
            ...                                             # the recipe's own figures, in run.file(...)
            run.conclude(detector, head=..., dataset=...)
        return run.result

    task: the registered task (its recipe and metric name the run); args: the parsed flags (the run's
    config: --output, --name, --epochs, --patience, --verbose, --threads, --resume/--restart...); argv:
    the command's arguments (report.json's "command"); options: the backbone's options. Leaving the
    block normally swaps the finished folder in, then prints the report's table, the recipe's
    `notes` and the folder."""

    def __init__(self, task, args, argv, options):
        from toolkit import tasks

        self.spec, self.args, self.argv, self.options = tasks.get(task), args, argv, options
        self.folder = run_folder(args)
        self.history, self.seconds, self.formats, self.result, self.notes = None, None, None, None, []
        self.backbone = None

    def __enter__(self):
        self.folder.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        handled = self.folder.__exit__(exc_type, exc, tb)
        if exc_type is None and self.result is not None:
            from toolkit.export import report

            print(report.format_table(self.result))
            for note in self.notes:
                print(note)
            print(f"wrote {self.folder.final}")
        return handled

    @property
    def path(self):
        return self.folder.path

    @property
    def final(self):
        return self.folder.final

    def file(self, *parts):
        return self.folder.file(*parts)

    def fit(self, model, train, validation, backbone=None, keep_backbone=True):
        """training.fit in the run folder (resume, early stopping, batch-norm statistics). Unless
        keep_backbone is False, `conclude` writes the trained backbone (`backbone`, or the task
        model's nested one) as the run's backbone preset, backbone/. Returns the history."""
        from toolkit import tasks, training

        verbose = verbosity(getattr(self.args, "verbose", "0"))
        self.history, self.seconds = training.fit(model, train, validation, self.args.epochs, self.path,
                                                  self.args.patience, verbose)  # fmt: skip
        self.backbone = (backbone or tasks.backbone_of(model)) if keep_backbone else None
        return self.history

    def export(self, model, test_inputs, test_labels, calibration, class_names=None, intensity=None):
        """Every format of a single-pass task written and scored on the whole test split: (formats, Keras
        outputs). class_names (labels.txt) and intensity (the 16-bit scaling rule predict applies) are
        written first: every .tflite file carries them (toolkit.export.metadata)."""
        from toolkit.data import intensity as intensity_rules
        from toolkit.export import pipeline
        from toolkit.runs import write_labels

        if class_names is not None:
            write_labels(self.path, class_names)
        if intensity is not None:
            intensity_rules.save(intensity, self.path)
        self.formats, outputs = pipeline.finish_run(self.path, model, self.spec.name, test_inputs, test_labels,
                                                    calibration, self.args.threads)  # fmt: skip
        return self.formats, outputs

    def export_decoder(self, model, test, calibration=None):
        """A decoder's parts written and verified through its decoding loop: (formats, engines, decoded ids).
        calibration: the same structure as `test` on a slice of the training split (what integer
        parts are calibrated on in `toolkit benchmark`)."""
        from toolkit.export import decoding

        self.formats, engines, decoded = decoding.finish_run(self.path, model, self.spec.name, test, self.args.threads,
                                                             calibration)  # fmt: skip
        return self.formats, engines, decoded

    def examples_per_second(self, count):
        """Training throughput: `count` examples an epoch over the epochs run."""
        return count * len(self.history["loss"]) / self.seconds

    def conclude(self, model, **details):
        """The run's last step: the training curves, report.json and report.md (`summary`'s fields and
        the recipe's `details`). Returns the report (also run.result)."""
        from toolkit.export import report

        report.plot_history(self.history, self.file("training_curves.png"))
        self.result = summary(self.spec.recipe, self.spec.metric, self.argv, self.args, self.options, model,
                              self.formats, self.seconds, self.history, **details)  # fmt: skip
        if self.backbone is not None:
            self.save_backbone_preset(details.get("dataset"))
        report.write_report(self.path, self.result)
        return self.result

    def save_backbone_preset(self, dataset=None):
        """backbone/: the trained backbone as a preset that another recipe starts from
        (--backbone-preset), with this run's data, scores and command in its metadata.json."""
        from toolkit.backbones import presets
        from toolkit.runs import BACKBONE_PRESET_DIR, VOCABULARY_FILE

        vocabulary = self.file(VOCABULARY_FILE)
        keras_scores = (self.formats or {}).get("keras", {})
        presets.save(
            self.file(BACKBONE_PRESET_DIR), self.backbone, self.args.backbone, self.options,
            metadata={
                "trained_by": self.spec.recipe,
                "data": dataset or getattr(self.args, "data", None),
                "validation": best_epoch_figures(self.result["history"]),
                "test": {k: v for k, v in keras_scores.items() if isinstance(v, (int, float))},
                "started_from": self.args.backbone_preset,
                "epochs_run": self.result["epochs_run"],
                "train_seconds": self.seconds,
                "command": self.result["command"],
                "versions": self.result["versions"],
            },
            vocabulary=vocabulary if os.path.isfile(vocabulary) else None,
        )  # fmt: skip


def pretrain(kind, args, argv, model, backbone, train, validation, describe, vocabulary=None):
    """What both `toolkit pretrain` recipes share: training.fit in the run folder (resume, early
    stopping), the curves, and the backbone written as a preset into the folder, which is swapped in
    whole. describe(history) -> the recipe's own metadata (a "validation" entry adds to the best
    epoch's figures); vocabulary: a text backbone's
    WordPieces (saved as vocab.txt and copied into assets/). Returns (the preset, the history)."""
    from toolkit import training
    from toolkit.backbones import presets
    from toolkit.export import report

    with run_folder(args) as folder:
        history, seconds = training.fit(model, train, validation, args.epochs, folder.path, args.patience,
                                        verbosity(args.verbose))  # fmt: skip
        report.plot_history(history, folder.file("training_curves.png"))
        vocabulary_file = None
        if vocabulary is not None:
            from toolkit.data import tokenizer
            from toolkit.runs import VOCABULARY_FILE

            tokenizer.save_vocabulary(vocabulary, folder.path)
            vocabulary_file = folder.file(VOCABULARY_FILE)
        own = describe(history)
        presets.write(folder.path, backbone, vocabulary=vocabulary_file, metadata={
            "trained_by": f"pretrain_{kind}",
            **own,
            "validation": {**best_epoch_figures(history), **own.get("validation", {})},
            "history": plain_history(history),
            "epochs_run": len(history["loss"]),
            "train_seconds": seconds,
            "started_from": args.backbone_preset,
            "command": command_line(kind, argv, verb="pretrain"),
        })  # fmt: skip
    final = os.path.join(args.output, args.name)
    print(f"validation: {best_epoch_figures(history)}")
    print(f"wrote the backbone preset {final} ({seconds:.0f} s of training)")
    return presets.read(final), history


def plain_history(history):
    """Every epoch's training and validation figures as JSON floats (report.json, a preset's metadata)."""
    return {k: [float(v) for v in values] for k, values in history.items()}


def best_epoch_figures(history):
    """The validation figures of the epoch training kept (the lowest val_loss: toolkit.training's
    early stopping restores it), or of the last epoch where no val_loss was recorded."""
    losses = history.get("val_loss") or []
    best = min(range(len(losses)), key=losses.__getitem__) if losses else -1
    return {k: v[best] for k, v in history.items() if k.startswith("val_") and v}


def summary(name, metric, argv, args, options, model, formats, seconds, history, **details):
    """report.json's fields that every recipe shares; `details` adds the recipe's own (head, dataset...)."""
    import keras

    from toolkit import backbones
    from toolkit.export import pipeline

    return {
        "recipe": name,
        "backend": keras.backend.backend(),
        "metric": metric,
        "train_seconds": seconds,
        "command": command_line(name, argv),
        "formats": formats,
        "backbone": args.backbone,
        "backbone_options": options,
        "backbone_preset": getattr(args, "backbone_preset", None),  # the preset it started from, if any
        "params": backbones.count_params(model),
        "flops": backbones.count_flops(model),
        "epochs": args.epochs,
        "epochs_run": len(history["loss"]),
        # every epoch's training and validation figures, so a choice made on validation can be read back
        "history": plain_history(history),
        "versions": pipeline.versions(),
        **details,
    }
