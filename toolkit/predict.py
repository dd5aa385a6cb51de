"""Predictions from a finished run folder, on the user's own files, with any exported format."""

import io
import os

import numpy as np

from toolkit.errors import ToolkitError, choose
from toolkit.runs import MODEL_FILE, Run, tflite_file

FORMAT_FILES = {
    "keras": MODEL_FILE,
    **{fmt: tflite_file(fmt) for fmt in ("tflite_fp32", "tflite_dynamic", "tflite_int8")},
}


def load_run_model(run_dir, fmt, allow_unsafe=False):
    """Returns (callable on a float batch, input shape (H, W, C)); .keras files load in Keras safe_mode."""
    choose("format", fmt, FORMAT_FILES)
    path = Run(run_dir).require(FORMAT_FILES[fmt])
    if fmt == "keras":
        from toolkit import saving

        from toolkit.export.pipeline import keras_outputs

        model = saving.load_model(path, allow_unsafe, compile=False)
        return (lambda x: keras_outputs(model, x)), tuple(model.input_shape[1:])
    from toolkit.export.litert import LiteRTModel

    runtime = LiteRTModel(path)
    shape = runtime.interpreter.get_input_details()[0]["shape"]
    return runtime, tuple(int(d) for d in shape[1:])


def read_image(path, shape):
    """Reads one image file as uint8 at the model's size and channel count; a bad file is named."""
    from PIL import Image

    from toolkit.data.images import check_image_file

    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such image file")
    check_image_file(path)
    with Image.open(path) as image:
        image = image.convert("L" if shape[2] == 1 else "RGB").resize((shape[1], shape[0]), Image.BILINEAR)
        array = np.asarray(image, np.uint8)
    return array[..., None] if shape[2] == 1 else array


def predict_classification(run_dir, files, fmt="tflite_int8", allow_unsafe=False):
    labels = Run(run_dir).labels("classification")
    model, shape = load_run_model(run_dir, fmt, allow_unsafe)
    batch = np.stack([read_image(f, shape) for f in files]).astype(np.float32)
    probabilities = model(batch)
    return [(f, labels[int(np.argmax(p))], float(np.max(p))) for f, p in zip(files, probabilities)]


class SentimentPredictor:
    """Raw text -> (label, probability): the run's own vocabulary and tokenizer, then its model."""

    def __init__(self, run_dir, fmt="tflite_dynamic", allow_unsafe=False):
        from toolkit.data import tokenizer

        self.labels = Run(run_dir).labels("sentiment")
        vocabulary = tokenizer.load_vocabulary(run_dir)
        self.model, shape = load_run_model(run_dir, fmt, allow_unsafe)
        self.tokenizer = tokenizer.make(vocabulary, shape[0])

    def token_ids(self, texts):
        from toolkit.data.texts import check_text

        texts = [check_text(t, f"text {i + 1}") for i, t in enumerate(texts)]
        return np.asarray(self.tokenizer(texts), np.int32)

    def __call__(self, texts):
        probabilities = np.asarray(self.model(self.token_ids(texts)))
        return [(t, self.labels[int(np.argmax(p))], float(np.max(p))) for t, p in zip(texts, probabilities)]


def predict_sentiment(run_dir, texts, fmt="tflite_dynamic", allow_unsafe=False):
    return SentimentPredictor(run_dir, fmt, allow_unsafe)(texts)


def predict_detection(run_dir, files, fmt="tflite_int8", allow_unsafe=False, min_score=0.3, output_dir=None):
    """Detections on the user's images, each drawn to FILE.detections.png (in output_dir, or beside
    the image). Rows: (file, class name, score, "x1,y1,x2,y2" in the original image's pixels) per
    detection, then (file, "wrote PATH") for its drawing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from toolkit.export.report import draw_detections

    labels = Run(run_dir).labels("detection")
    model, shape = load_run_model(run_dir, fmt, allow_unsafe)
    rows = []
    for path in files:
        image = read_image(path, shape)
        with Image.open(path) as original:
            scale = np.array([original.width / shape[1], original.height / shape[0]] * 2)
        outputs = model(image[None].astype(np.float32))
        n = int(outputs["num_detections"][0])
        found = {k: np.asarray(outputs[k][0][:n]) for k in ("boxes", "scores", "classes")}
        keep = found["scores"] >= min_score
        found = {k: v[keep] for k, v in found.items()}
        for box, score, cls in zip(found["boxes"], found["scores"], found["classes"]):
            rows.append((path, labels[int(cls)], float(score), ",".join(f"{v:.1f}" for v in box * scale)))
        fig, ax = plt.subplots(figsize=(5, 5))
        draw_detections(ax, image, found, labels, min_score=min_score)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        rows.append((path, f"wrote {_write_beside(path, '.detections.png', buffer.getvalue(), output_dir)}"))
    return rows


def predict_segmentation(run_dir, files, fmt="tflite_int8", allow_unsafe=False, output_dir=None):
    """Class maps of the user's images, each written to FILE.segmentation.png (in output_dir, or beside
    the image) at the image's own size: a palette PNG whose indices are the class ids (PASCAL VOC's
    colours), so it views as a colour mask and reads back as an index mask (`--data folder:`). Rows:
    (file, class name, fraction of the image's pixels) per class present, largest first, then
    (file, "wrote PATH")."""
    from PIL import Image

    from toolkit.data.segmentation import voc_palette

    labels = Run(run_dir).labels("segmentation")
    model, shape = load_run_model(run_dir, fmt, allow_unsafe)
    rows = []
    for path in files:
        image = read_image(path, shape)
        class_map = np.asarray(model(image[None].astype(np.float32)))[0].astype(np.uint8)
        with Image.open(path) as original:
            size = original.size
        mask = Image.fromarray(class_map, mode="P").resize(size, Image.NEAREST)  # class ids: no interpolation
        mask.putpalette(voc_palette().tobytes())
        ids, counts = np.unique(np.asarray(mask), return_counts=True)
        for i in np.argsort(-counts, kind="stable"):
            rows.append((path, labels[int(ids[i])], float(counts[i] / counts.sum())))
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        rows.append((path, f"wrote {_write_beside(path, '.segmentation.png', buffer.getvalue(), output_dir)}"))
    return rows


def _write_beside(path, suffix, data, output_dir=None):
    """Writes `data` (atomically) to <image stem><suffix> in output_dir, or beside the image; returns that path."""
    from toolkit.runs import write_atomic

    stem = os.path.splitext(os.path.basename(path))[0] + suffix
    target = os.path.join(output_dir or os.path.dirname(os.path.abspath(path)), stem)
    write_atomic(target, data)
    return target
