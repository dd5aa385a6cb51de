"""`toolkit`: backbones, run, predict. Errors are one line on stderr and a non-zero exit."""

import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ start-up chatter out of the CLI

from toolkit.errors import ToolkitError, choose  # noqa: E402
from toolkit.recipe import ArgumentParser, positive_float, positive_int  # noqa: E402
from toolkit.runs import REPORT_FILE  # noqa: E402

USAGE = """usage: toolkit COMMAND ...

commands:
  backbones [--input-size N] [--channels C] [--sequence-length T]
                                              list backbones with parameters and FLOPs
  backbones --presets DIR                     list the backbone presets under DIR (runs' backbone/ too)
  run RECIPE [options]                        train, export and verify a recipe (toolkit run RECIPE --help);
                                              a re-run continues an interrupted one (--resume, --restart)
  train RECIPE [options]                      the same as run
  pretrain vision|text [options]              pretrain a backbone into a preset folder (then --backbone-preset DIR)
  predict classification IMAGE|FOLDER|GLOB|-... [--run DIR] [--format F] [--json] [--unsafe-load]
  predict --model FILE.tflite INPUT...        predict with one exported file on its own (labels inside)
  predict sentiment "TEXT"... | --file TEXTS | - [--run DIR] [--format F] [--json]
  predict detection IMAGE...                  boxes, drawn to IMAGE.detections.png
  predict segmentation IMAGE...               class map, to IMAGE.segmentation.png
  predict multitask IMAGE...                  every head of a multi-task run, from its one file
  predict node_classification [NODE...]       classes of the run's graph's nodes (default: every node)
  generate "PROMPT" [--max-tokens N] [--sampler greedy|top_k|top_p|temperature|beam] [--run DIR]
                                              stream a language model's continuation (generation run)
  translate "TEXT"... [--sampler greedy|beam] [--run DIR]   translate with a translation run
  mediapipe RUN_DIR [--quantization fp32|int8] [--output FILE]
                                              a MediaPipe Tasks file (ImageClassifier / ObjectDetector) of a run
  benchmark RUN_DIR... | --all [--formats F,...] [--threads 1,2] [--floor POINTS]
                                              every export format: status, size, metric, latency
"""


def cmd_backbones(argv):
    p = ArgumentParser(prog="toolkit backbones")
    p.add_argument("--input-size", type=positive_int, default=224, help="vision: square image size")
    p.add_argument("--channels", type=positive_int, default=3, help="vision: image channels")
    p.add_argument("--sequence-length", type=positive_int, default=64, help="text: tokens per text")
    p.add_argument("--nodes", type=positive_int, default=209, help="graph: nodes (16 features each)")
    p.add_argument("--presets", default=None, metavar="DIR", help="list the backbone presets under DIR instead")
    args = p.parse_args(argv)
    if args.presets:
        return _list_presets(args.presets)
    from toolkit import backbones

    shapes = {
        "vision": (args.input_size, args.input_size, args.channels),
        "text": (args.sequence_length,),
        "graph": (args.nodes, 16),
    }
    print(f"{'name':<20} {'kind':<7} {'provider':<20} {'params':>12} {'GFLOPs':>9}  input  description")
    for name in backbones.names():
        spec = backbones.entry(name)
        shape = shapes[spec.kind]
        model = backbones.get(name, shape)
        print(
            f"{name:<20} {spec.kind:<7} {spec.provider:<20} {backbones.count_params(model):>12,} "
            f"{backbones.count_flops(model) / 1e9:>9.3f}  {'x'.join(map(str, shape))}  {spec.description}"
        )
    return 0


def _list_presets(root):
    """One line per preset folder under `root`: backbone, kind, input, parameters, what trained it
    on which data, and its test scores (from metadata.json)."""
    from toolkit.backbones import presets

    found = presets.find(root)
    if not found:
        raise ToolkitError(f"no backbone preset (a folder with {presets.CONFIG_FILE}) under {root}")
    print(f"{'preset':<44} {'backbone':<12} {'kind':<7} {'input':<12} {'params':>10}  trained by / data / scores")
    for path in found:
        preset = presets.read(path)
        meta = preset.metadata
        scores = meta.get("test") or {k: v for k, v in (meta.get("validation") or {}).items() if "loss" not in k}
        scored = "test" if meta.get("test") else "validation"
        test = f"{scored} " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())[:3]) if scores else ""
        data = str(meta.get("data", "?"))
        data = data if len(data) <= 40 else data[:39] + "…"
        origin = "KerasHub preset" if preset.keras_hub else f"{meta.get('trained_by', '?')} on {data}"
        params = f"{meta['parameter_count']:,}" if isinstance(meta.get("parameter_count"), int) else "?"
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
        print(f"{shown:<44} {preset.backbone:<12} {preset.kind:<7} "
              f"{'x'.join(map(str, preset.input_shape)):<12} {params:>10}  "
              f"{origin}{' / ' + test if test else ''}")  # fmt: skip
    return 0


def _recipes():
    """One recipe per registered task (toolkit.tasks): `toolkit run NAME` runs recipes/NAME.py."""
    from toolkit import tasks

    return tasks.recipes()


def cmd_run(argv):
    if not argv or argv[0].startswith("-"):
        raise ToolkitError(f"toolkit run needs a recipe: {', '.join(_recipes())}")
    name = choose("recipe", argv[0], _recipes())
    importlib.import_module(f"recipes.{name}").main(argv[1:])
    return 0


PRETRAINING = {"vision": "pretrain_vision", "text": "pretrain_text"}  # `toolkit pretrain KIND` runs recipes/<value>.py


def cmd_pretrain(argv):
    if not argv or argv[0].startswith("-"):
        raise ToolkitError(f"toolkit pretrain needs a kind: {', '.join(PRETRAINING)}")
    kind = choose("pretraining", argv[0], PRETRAINING)
    importlib.import_module(f"recipes.{PRETRAINING[kind]}").main(argv[1:])
    return 0


UNSAFE_HELP = "load a .keras file that carries Python code (Lambda layers): only files you trust"
PROGRESS_CHUNK = 256  # inputs per predictor call on long inputs, with a progress line on stderr after each


def _model_option(argv):
    """The value of --model FILE / --model=FILE in argv, or None."""
    for i, item in enumerate(argv):
        if item == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if item.startswith("--model="):
            return item[len("--model="):]
    return None


def cmd_predict(argv):
    from toolkit import predict

    model_file = _model_option(argv)
    if model_file is not None and (not argv or argv[0].startswith("-")):  # the file says which recipe it is
        from toolkit.export.metadata import read

        argv = [read(model_file)["description"].get("recipe", "?"), *argv]
    if not argv or argv[0].startswith("-"):
        raise ToolkitError(f"toolkit predict needs a recipe (or --model FILE.tflite): {', '.join(_recipes())}")
    name = choose("recipe", argv[0], _recipes())

    task, predictor = predict.predictor_for(name)
    p = ArgumentParser(prog=f"toolkit predict {name}")
    p.add_argument("inputs", nargs="+" if predictor.inputs == "images" else "*",
                   help=f"{predictor.help}; - reads stdin")  # fmt: skip
    p.add_argument("--run", default=os.path.join("saved_models", name), help="run folder")
    p.add_argument("--model", default=None, metavar="FILE.tflite",
                   help="a .tflite file the toolkit wrote, on its own: its labels, vocabulary and scaling are inside")
    p.add_argument("--format", default=predict.AUTO,
                   help=f"{', '.join(predict.FORMAT_FILES)}, or auto (the default): the fastest format within "
                   f"{predict.ACCURATE_POINTS:g} pt of Keras in the run's benchmark.json, "
                   f"else {predictor.default_format}")  # fmt: skip
    if predictor.inputs == "texts":
        p.add_argument("--file", help="a UTF-8 text file: one text per line")
    p.add_argument("--json", action="store_true", help="one JSON object per input on stdout")
    p.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    args = p.parse_args(argv[1:])
    inputs = predict.expand_inputs(predictor.inputs, args.inputs, getattr(args, "file", None))
    if args.model is not None:
        if not args.model.endswith(".tflite"):
            raise ToolkitError(f"--model {args.model}: give a .tflite file (a run folder goes to --run)")
        if args.format != predict.AUTO:
            raise ToolkitError("--format picks a file in a run folder; --model names the file itself: give one")
        source, fmt = args.model, None
    else:
        source, fmt = args.run, predict.resolve_format(args.run, args.format, predictor.default_format)
    predict_rows = predictor.load(source, fmt, allow_unsafe=args.unsafe_load)  # the model loads once
    chunks = [inputs[i : i + PROGRESS_CHUNK] for i in range(0, len(inputs), PROGRESS_CHUNK)] or [inputs]
    for done, chunk in enumerate(chunks, 1):
        rows = predict_rows(chunk)
        if args.json:
            for record in predict.records(rows, predictor):
                print(json.dumps(record, ensure_ascii=False))
        else:
            for row in rows:
                print("\t".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
        if len(chunks) > 1:
            sys.stdout.flush()
            print(f"predicted {min(done * PROGRESS_CHUNK, len(inputs))}/{len(inputs)}", file=sys.stderr, flush=True)
    return 0


def _decoding_parser(prog, recipe, default_sampler):
    p = ArgumentParser(prog=prog)
    p.add_argument("--run", default=os.path.join("saved_models", recipe), help="run folder")
    p.add_argument("--format", default="tflite_fp32", help="keras, tflite_fp32 or tflite_dynamic")
    p.add_argument("--sampler", default=default_sampler, help="greedy, top_k, top_p, temperature or beam")
    p.add_argument("--temperature", type=positive_float, default=1.0)
    p.add_argument("--top-k", type=positive_int, default=10)
    p.add_argument("--top-p", type=positive_float, default=0.9)
    p.add_argument("--beams", type=positive_int, default=4)
    p.add_argument("--seed", type=int, default=None)
    return p


def _sampler(args):
    from toolkit.tasks import decoding

    if args.top_p > 1:
        raise ToolkitError(f"--top-p must be in (0, 1], got {args.top_p}")
    return decoding.make_sampler(args.sampler, args.temperature, args.top_k, args.top_p, args.beams, args.seed)


def cmd_generate(argv):
    p = _decoding_parser("toolkit generate", "generation", "top_p")
    p.add_argument("prompt", help="the text to continue (quote it)")
    p.add_argument("--max-tokens", type=positive_int, default=50, help="WordPieces to generate")
    args = p.parse_args(argv)
    sampler = _sampler(args)
    from toolkit.data.texts import check_text
    from toolkit.generate import Generator

    check_text(args.prompt, "prompt")  # before it is echoed
    generator = Generator(args.run, args.format)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()

    def write(text):
        sys.stdout.write(("" if not text or text[0] in ",.;:!?)-_'" else " ") + text if write.first else text)
        write.first = False
        sys.stdout.flush()

    write.first = True
    generator(args.prompt, args.max_tokens, sampler, write)
    print()
    return 0


def cmd_translate(argv):
    p = _decoding_parser("toolkit translate", "translation", "greedy")
    p.add_argument("texts", nargs="+", help="source texts (quote each one)")
    args = p.parse_args(argv)
    sampler = None if args.sampler == "greedy" else _sampler(args)
    from toolkit.generate import Translator

    for text, translated in zip(args.texts, Translator(args.run, args.format)(args.texts, sampler)):
        print(f"{text}\t{translated}")
    return 0


def _int_list(text):
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ToolkitError(f"--threads must be positive integers separated by commas, got {text!r}")
    return values


def cmd_benchmark(argv):
    p = ArgumentParser(prog="toolkit benchmark")
    p.add_argument("runs", nargs="*", help="run folders (default with --all: every run under saved_models/)")
    p.add_argument("--all", action="store_true", help="every run folder under --output, and a Pareto plot")
    p.add_argument("--output", default="saved_models")
    p.add_argument("--formats", default=None, help="comma-separated: saved_model, tflite_fp32, tflite_fp16, "
                   "tflite_dynamic, tflite_int8, tflite_int8io, tflite_int16x8, onnx (default: all)")  # fmt: skip
    p.add_argument("--threads", default="1,2", help="XNNPACK thread counts to time, e.g. 1,2")
    p.add_argument("--floor", type=float, default=None, help="fail (exit 1) when a format drops more points")
    p.add_argument("--unsafe-load", action="store_true", help=UNSAFE_HELP)
    args = p.parse_args(argv)
    from toolkit.export import benchmark

    runs = list(args.runs)
    if args.all:
        if not os.path.isdir(args.output):
            raise ToolkitError(f"{args.output} does not exist: no runs to benchmark")
        found = sorted(
            os.path.join(args.output, d) for d in os.listdir(args.output)
            if os.path.isfile(os.path.join(args.output, d, REPORT_FILE))
        )  # fmt: skip
        runs += found
    if not runs:
        raise ToolkitError("toolkit benchmark needs a run folder (or --all)")
    formats = tuple(args.formats.split(",")) if args.formats else benchmark.FORMATS
    threads = _int_list(args.threads)
    results, failed = {}, []
    for name in formats:
        choose("format", name, benchmark.FORMATS)
    # several runs: one process each, so the converter's leak does not add up over runs
    measure = benchmark.benchmark if len(runs) == 1 else benchmark.benchmark_in_subprocess
    for run in runs:
        result, failures = measure(run, formats, threads, args.floor, args.unsafe_load)
        results[run] = result
        failed += [f"{run}:{name}" for name in failures]
        print(f"\n{run}\n{benchmark.table(result)}")
    if args.all:
        path = os.path.join(args.output, "pareto.png")
        benchmark.pareto_plot(results, path)
        print(f"\nwrote {path}")
    if failed:
        print(f"error: {len(failed)} format(s) did not pass: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_mediapipe(argv):
    p = ArgumentParser(prog="toolkit mediapipe")
    p.add_argument("run", help="a finished classification or detection run folder")
    p.add_argument("--quantization", default="fp32", help="fp32 or int8 (calibrated on the run's training samples)")
    p.add_argument("--output", default=None, metavar="FILE.tflite", help="default: RUN/model_mediapipe[_int8].tflite")
    p.add_argument("--check", type=positive_int, default=64, metavar="N",
                   help="test images run through MediaPipe Tasks itself, where mediapipe is installed")
    args = p.parse_args(argv)
    from toolkit.export import mediapipe

    path, entry = mediapipe.export(args.run, args.quantization, args.output)
    check = mediapipe.check_on_test_split(args.run, path, args.check)
    mediapipe.record(args.run, path, entry, check)
    metric = entry["metric"]
    print(f"wrote {path}: {metric} {entry[metric]:.4f} on the run's whole test split ({entry['drop_points']:+.2f} pt vs "
          f"Keras), batch-1 latency {entry['latency_ms']:.3f} ms, {entry['size_bytes'] / 1e6:.3f} MB")  # fmt: skip
    if check is None:
        print("mediapipe is not installed here: the file was checked against the metadata schema and LiteRT only")
    else:
        agreement = check.get("top1_agreement", check.get("identical_detections"))
        print(f"MediaPipe Tasks {check['mediapipe']} on {check['images']} test images: {agreement:.1%} the same as "
              f"LiteRT on the file (largest score difference {check['max_score_diff']:.2g})")  # fmt: skip
    return 0


COMMANDS = {
    "backbones": cmd_backbones,
    "run": cmd_run,
    "train": cmd_run,
    "pretrain": cmd_pretrain,
    "predict": cmd_predict,
    "benchmark": cmd_benchmark,
    "mediapipe": cmd_mediapipe,
    "generate": cmd_generate,
    "translate": cmd_translate,
}


def import_frameworks_quietly():
    """TensorFlow's C++ start-up writes absl and CUDA-stub notices straight to fd 2, which no
    environment variable silences in TF 2.21; keep them out of the CLI's one-line errors."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        command = COMMANDS[choose("command", argv[0], COMMANDS)]  # a mistyped command fails before the imports
        import_frameworks_quietly()
        return command(argv[1:])
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything unforeseen still ends in one line, unless asked for the traceback
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {first} (TOOLKIT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
