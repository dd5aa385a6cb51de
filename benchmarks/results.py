"""benchmarks/RESULTS.md holds one section per benchmark script, each replaced whole by its script."""

import os
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun that script to refresh it.\n"


def update_section(name, body, path=RESULTS, header=HEADER):
    """Replaces the section `name` of the markdown file `path` (RESULTS.md unless given) with `body`."""
    from toolkit.runs import write_atomic

    text = open(path).read() if os.path.exists(path) else header
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    write_atomic(path, text)


OUTPUT = "saved_models"


def machine():
    """Where a figure was measured: CPU, cores and the load averages (1/5/15 min) when it was written.
    A load near the core count means the benchmark had the machine to itself; above it, other jobs ran."""
    import platform

    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load} at the end"


def load_report(name):
    """saved_models/<name>/report.json, or None when that run does not exist."""
    from toolkit.runs import REPORT_FILE, Run

    path = os.path.join(OUTPUT, name)
    return Run.load(path).report if os.path.isfile(os.path.join(path, REPORT_FILE)) else None


def save_report(name, found):
    """Writes a baseline's figures to saved_models/<name>/report.json (atomically), for --reuse."""
    import json

    from toolkit.runs import REPORT_FILE, write_atomic

    os.makedirs(os.path.join(OUTPUT, name), exist_ok=True)
    write_atomic(os.path.join(OUTPUT, name, REPORT_FILE), json.dumps(found, indent=1).encode())


def run_or_reuse(name, reuse, train):
    """A run's report: the one in saved_models/ with --reuse (when it exists), else train()'s."""
    found = load_report(name) if reuse else None
    return found if found is not None else train()


def classification_backbone(args, reuse):
    """The classification recipe trained with the task's backbone and options
    (saved_models/classification_for_detection), so its backbone preset fits the task's model."""
    from recipes import classification as classification_recipe

    name = "classification_for_detection"
    argv = ["--backbone", args.backbone, *sum((["--backbone-option", p] for p in args.backbone_option), [])]
    found = run_or_reuse(
        name, reuse, lambda: classification_recipe.main(argv + ["--name", name, "--output", OUTPUT, "--verbose", "2"])
    )
    from toolkit.runs import BACKBONE_PRESET_DIR

    return os.path.join(OUTPUT, name, BACKBONE_PRESET_DIR), found


def transfer(recipe_module, name, args, argv, reuse):
    """The task's recipe again, from the backbone the classification recipe trained with the task's
    backbone options (`classification_backbone`), saved as saved_models/<name>: (its report, the classifier's)."""
    preset, classifier = classification_backbone(args, reuse)
    found = run_or_reuse(name, reuse, lambda: recipe_module.main(
        argv + ["--backbone-preset", preset, "--name", name, "--verbose", "2"]))  # fmt: skip
    return found, classifier


def script_flags(argv, *flags):
    """A benchmark script's own flags out of argv: ({flag: given}, the rest for the recipe)."""
    return {flag: flag in argv for flag in flags}, [a for a in argv if a not in flags]

