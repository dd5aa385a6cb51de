"""report.json (one shape for every recipe), report.md, and the figures beside them."""

import json
import os

import numpy as np

from toolkit.runs import REPORT_FILE, REPORT_MD_FILE, write_atomic


def write_report(run_dir, report):
    """report.json: recipe, backend, metric, train_seconds, command, formats{name: {metric, ...}}."""
    for key in ("recipe", "backend", "metric", "train_seconds", "command", "formats"):
        if key not in report:
            raise ValueError(f"report.json needs {key!r}")
    write_atomic(os.path.join(run_dir, REPORT_FILE), json.dumps(report, indent=2, sort_keys=False) + "\n")
    write_atomic(os.path.join(run_dir, REPORT_MD_FILE), markdown(report))


MEASURES = ("latency_ms", "latency_p90_ms", "size_bytes", "max_abs_diff", "threads")


def format_table(report):
    """Per format: the headline metric, its drop vs Keras, any further task metrics (e.g. f1),
    max abs diff against Keras, batch-1 latency and size."""
    metric, formats = report["metric"], report["formats"]
    base = formats.get("keras", {}).get(metric)
    extra = []  # further numeric figures (f1, chrf, identical_to_keras...), in order of first appearance
    for f in formats.values():
        extra += [k for k, v in f.items() if k not in MEASURES + (metric,) + tuple(extra) and _is_number(v)]
    rows = [
        f"| format | {metric} | drop vs keras | {''.join(k + ' | ' for k in extra)}max abs diff "
        "| latency ms (median / p90) | size MB |",
        "|---|---|---|" + "---|" * len(extra) + "---|---|---|",
    ]
    for name, f in formats.items():
        # fractions (accuracy, mIoU) drop in percentage points; metrics on their own scale (BLEU 0..100,
        # perplexity) in their own units
        scale, unit = (100, " pt") if base is not None and abs(base) <= 1 else (1, "")
        drop = "" if base is None or name == "keras" else f"{(base - f[metric]) * scale:+.2f}{unit}"
        diff = f"{f['max_abs_diff']:.2e}" if "max_abs_diff" in f else ""
        rows.append(
            f"| {name} | {f[metric]:.4f} | {drop} | {''.join(_cell(f, k) for k in extra)}{diff} "
            f"| {f['latency_ms']:.3f} / {f.get('latency_p90_ms', 0):.3f} | {f['size_bytes'] / 1e6:.3f} |"
        )
    return "\n".join(rows)


def _cell(figures, key):
    """A further figure's table cell: differences (raw_max_abs_diff...) in scientific notation."""
    if key not in figures:
        return " | "
    return f"{figures[key]:.2e} | " if key.endswith("diff") else f"{figures[key]:.4f} | "


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def markdown(report):
    lines = [
        f"# {report['recipe']} run",
        "",
        f"- backbone: `{report.get('backbone', '?')}`, head: {report.get('head', '?')}",
        f"- parameters: {report.get('params', 0):,}, FLOPs per input: {report.get('flops', 0) / 1e6:.1f} M",
        f"- data: {report.get('dataset', '?')} ({report.get('split_sizes', {})})",
        f"- backend: {report['backend']}, "
        + (f"trained {report.get('epochs_run', '?')} epochs in {report['train_seconds']:.0f} s"
           if report["train_seconds"] is not None else "trained by user code (toolkit.export_model)"),
        f"- command: `{report['command']}`",
        "",
        "## Test split, per format",
        "",
        format_table(report),
        "",
        "Latency is batch 1 on this machine's CPU (LiteRT: XNNPACK, "
        f"{report['formats'].get('tflite_fp32', {}).get('threads', '?')} threads); max abs diff is against "
        "the Keras model's outputs on the same test inputs.",
        "",
    ]
    if report["train_seconds"] is not None:  # a recipe's run: its training curves
        lines += ["![training curves](training_curves.png)", ""]
    if report.get("samples"):  # sample outputs (translations, generated text): a table of their fields
        keys = list(report["samples"][0])
        lines += ["## Sample outputs (test split)", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(s[k]).replace("|", "\\|").replace("\n", " ") for k in keys) + " |"
                  for s in report["samples"]] + [""]  # fmt: skip
    if report.get("figures"):
        lines += [f"![{name}]({name})" for name in report["figures"]] + [""]
    return "\n".join(lines)


def plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix, class_names, path, title="confusion matrix (test split)"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.6 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_graph(adjacency, predicted, labels, class_names, test_nodes, path):
    """The graph twice, nodes coloured by predicted and by true class; test nodes drawn larger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    graph = nx.from_numpy_array(adjacency)
    layout = nx.spring_layout(graph, seed=0, weight=None)
    sizes = [60 if n in set(int(t) for t in test_nodes) else 20 for n in graph.nodes]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, classes, title in ((axes[0], predicted, "predicted"), (axes[1], labels, "true")):
        nx.draw_networkx_edges(graph, layout, ax=ax, alpha=0.08)
        nx.draw_networkx_nodes(graph, layout, ax=ax, node_size=sizes, node_color=[cmap(int(c)) for c in classes])
        ax.set_title(f"{title} class (large: test nodes)")
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(class_names))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_detections(ax, image, detections, class_names, ground_truth=None, min_score=0.3):
    """One image on `ax`: true boxes dashed white, detections (score >= min_score) coloured by class."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    image = np.asarray(image)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:  # matplotlib reads float RGB as 0..1 and ignores vmin/vmax: pixels here are 0..255 (scaled 16-bit too)
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
    for x1, y1, x2, y2 in ground_truth["boxes"] if ground_truth else []:
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", ls="--", lw=1))
    for (x1, y1, x2, y2), score, cls in zip(detections["boxes"], detections["scores"], detections["classes"]):
        if score < min_score:
            continue
        color = cmap(int(cls) % 10)
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=1.5))
        ax.text(x1, y1, f"{class_names[int(cls)]} {score:.2f}", color="black", fontsize=6, va="bottom",
                bbox={"fc": color, "ec": "none", "pad": 0.5})  # fmt: skip
    ax.axis("off")


def plot_detections(images, outputs, ground_truth, class_names, path, count=12, min_score=0.3):
    """A grid of test images with true boxes (dashed white) and detections (coloured, with scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(images))
    columns = min(count, 4)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= count:
            ax.axis("off")
            continue
        n = int(outputs["num_detections"][i])
        detections = {k: outputs[k][i][:n] for k in ("boxes", "scores", "classes")}
        draw_detections(ax, images[i], detections, class_names, ground_truth[i], min_score)
    fig.suptitle(f"test images: true boxes dashed, detections with score >= {min_score}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overlay(image, class_map, alpha=0.5):
    """An RGB picture of `image` (grey or RGB, 0..255) with each non-background class tinted in its colour."""
    import matplotlib.pyplot as plt

    image = np.asarray(image, np.float32)
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colors = np.asarray([plt.get_cmap("tab10")(c % 10)[:3] for c in range(256)], np.float32) * 255
    class_map = np.asarray(class_map).astype(np.int64)
    tint = colors[np.maximum(class_map - 1, 0)]
    shown = (class_map > 0) & (class_map != 255)
    rgb = np.where(shown[..., None], (1 - alpha) * rgb + alpha * tint, rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def plot_segmentation(images, predicted, truth, class_names, path, count=8):
    """Rows of test images: the image, the predicted class map over it, the true one over it (class colours
    as in the legend; class 0 is the background and stays untinted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(images))
    fig, axes = plt.subplots(count, 3, figsize=(7.5, 2.5 * count), squeeze=False)
    for i in range(count):
        for ax, picture, title in zip(
            axes[i], (np.repeat(np.asarray(images[i]), 3, -1) if np.asarray(images[i]).shape[-1] == 1 else images[i],
                      overlay(images[i], predicted[i]), overlay(images[i], truth[i])), ("image", "predicted", "true")
        ):  # fmt: skip
            ax.imshow(np.asarray(picture, np.uint8))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    cmap = plt.get_cmap("tab10")
    handles = [matplotlib.patches.Patch(color=cmap((c - 1) % 10), label=name)
               for c, name in enumerate(class_names) if c > 0]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
