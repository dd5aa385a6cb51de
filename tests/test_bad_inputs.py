"""Bad input thrown at the CLI and the Python API: one clear line naming the culprit, a non-zero
exit, no traceback, no silent NaN, and nothing previously saved touched.

To add a kind: append a `cli(...)` or `api(...)` entry to CASES (the `files` fixture makes the
bad files; `{files}` in an argument is its folder, `{out}` the output folder holding saved runs).
"""

import hashlib
import io
import json
import os
import resource
import zipfile
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from toolkit import cli as toolkit_cli
from toolkit.errors import ToolkitError

CASES = []


def cli(kind, argv, *phrases):
    CASES.append(pytest.param("cli", argv, phrases, id=kind))


def api(kind, call, *phrases):
    CASES.append(pytest.param("api", call, phrases, id=kind))


F, O = "{files}", "{out}"
CLS = ("run", "classification", "--output", O, "--epochs", "1")
SENT = ("run", "sentiment", "--output", O, "--epochs", "1")
NODE = ("run", "node_classification", "--output", O, "--epochs", "1")
TRANS = ("run", "translation", "--output", O, "--epochs", "1")

# Images
cli("truncated image", [*CLS, "--data", f"folder:{F}/truncated"], "cut.png", "not a readable image")
cli("corrupt image", [*CLS, "--data", f"folder:{F}/corrupt"], "noise.jpg", "not a readable image")
cli("zero-byte image", [*CLS, "--data", f"folder:{F}/empty_file"], "empty.png", "not a readable image")
cli("image folder with one class", [*CLS, "--data", f"folder:{F}/one_class"], "at least 2")
cli("image folder without images", [*CLS, "--data", f"folder:{F}/no_images"], "holds no images")
cli("missing image folder", [*CLS, "--data", f"folder:{F}/nowhere"], "nowhere does not exist")
api("wrong channel count", lambda: _arrays(np.zeros((20, 8, 8, 2), np.uint8)), "(N, H, W, 1 or 3)", "(20, 8, 8, 2)")
api("zero-sized images", lambda: _arrays(np.zeros((20, 0, 8, 1), np.uint8)), "non-empty", "(20, 0, 8, 1)")
api("empty image dataset", lambda: _arrays(np.zeros((0, 8, 8, 1), np.uint8), np.zeros(0, int)), "non-empty")
api("NaN pixels", lambda: _arrays(_pixels(np.nan)), "image 3", "NaN/Inf")
api("Inf pixels", lambda: _arrays(_pixels(np.inf)), "image 3", "NaN/Inf")
api("pixels outside 0..255", lambda: _arrays(_pixels(300.0)), "image 3", "outside 0..255")
api("label out of range", lambda: _arrays(labels=np.r_[np.zeros(19, int), 7]), "label 7 of item 19", "0..1")
api("fractional labels", lambda: _arrays(labels=np.full(20, 0.5)), "labels must be integers")
api("labels not matching images", lambda: _arrays(labels=np.zeros(5, int)), "labels must be (20,)")
api("too few images to split", lambda: _arrays(np.zeros((2, 8, 8, 1), np.uint8), np.zeros(2, int)), "too few")
api("unknown augmentation", lambda: _images().augmentation("spin"), "unknown augmentation 'spin'")
cli("predict a missing image", ["predict", "classification", f"{F}/nope.png", "--run", f"{O}/classification",
    "--format", "keras"], "nope.png: no such image file")  # fmt: skip
cli("predict a corrupt image", ["predict", "classification", f"{F}/corrupt/b/noise.jpg", "--run", f"{O}/classification",
    "--format", "keras"], "noise.jpg", "not a readable image")  # fmt: skip
cli("TIFF with 4 channels", [*CLS, "--data", f"folder:{F}/tiff_four"], "four.tif", "4 channels", "1 (grey) or 3")
cli("TIFF with 2 channels", [*CLS, "--data", f"folder:{F}/tiff_two"], "two.tif", "2 channels")
cli("32-bit float TIFF", [*CLS, "--data", f"folder:{F}/tiff_float"], "float.tif", "float32", "8- and 16-bit")
cli("truncated TIFF", [*CLS, "--data", f"folder:{F}/tiff_cut"], "cut.tif", "not a readable image")
cli("folder mixing 8- and 16-bit images", [*CLS, "--data", f"folder:{F}/mixed_depth"], "deep.png is a 16-bit image",
    ".png is 8-bit", "one bit depth")  # fmt: skip
cli("predict a 16-bit image without a rule", ["predict", "classification", f"{F}/mixed_depth/b/deep.png", "--run",
    f"{O}/classification", "--format", "keras"], "deep.png: a 16-bit image", "intensity.json")  # fmt: skip
api("intensity.json that is not JSON", lambda: _intensity_file("{low: 3"), "intensity.json",
    "not a valid intensity rule")  # fmt: skip
api("intensity.json with high below low", lambda: _intensity_file('{"kind": "percentile", "low": 9, "high": 2}'),
    "intensity.json", "high 2 must exceed low 9")  # fmt: skip
api("intensity.json of another kind", lambda: _intensity_file('{"kind": "gamma", "low": 0, "high": 1}'),
    "intensity.json", "not a valid intensity rule")  # fmt: skip

# Text
cli("empty text", [*SENT, "--data", f"csv:{F}/empty_text.csv"], "empty_text.csv line 3", "empty")
cli("non-UTF-8 text file", [*SENT, "--data", f"csv:{F}/latin1.csv"], "latin1.csv line 2", "not valid UTF-8")
cli("missing text column", [*SENT, "--data", f"csv:{F}/good.csv", "--text-column", "review"], "no column 'review'")
cli("label not in class names", [*SENT, "--data", f"csv:{F}/good.csv", "--class-names", "pos,neg"],
    "good.csv line 2", "label 'bad' is not one of pos, neg")  # fmt: skip
cli("malformed JSONL", [*SENT, "--data", f"jsonl:{F}/broken.jsonl"], "broken.jsonl line 2", "not JSON")
cli("text file without rows", [*SENT, "--data", f"csv:{F}/header_only.csv"], "header_only.csv: no rows")
cli("text labels of one class", [*SENT, "--data", f"csv:{F}/one_label.csv"], "at least 2 classes")
cli("gettext catalogue babel cannot read", [*TRANS, "--data", f"gettext:{F}/broken.mo"], "broken.mo",
    "not a readable gettext catalogue")  # fmt: skip
cli("missing gettext catalogue", [*TRANS, "--data", f"gettext:{F}/missing.mo"], "missing.mo: no such file")
cli("gettext source that is not a catalogue", [*TRANS, "--data", f"gettext:{F}/a_file"], "a_file",
    "expected a gettext catalogue (.mo or .po)")  # fmt: skip
cli("folder without gettext catalogues", [*TRANS, "--data", f"gettext:{F}/no_images/a"], "no_images/a",
    "no .mo or .po gettext catalogues")  # fmt: skip
cli("gettext catalogue without usable messages", [*TRANS, "--data", f"gettext:{F}/one_word.po"], "one_word.po",
    "no translated messages of 2..20 words")  # fmt: skip
api("export_model with an unknown task", lambda: _export(task="detector"), "unknown task 'detector'", "detection")
api("export_model with a decoder", lambda: _export(task="translation"), "translation is a decoder", "toolkit run")
api("export_model with test not (inputs, labels)", lambda: _export(test=np.zeros((4, 8))), "test must be (inputs")
api("export_model with an empty test split", lambda: _export(test=(np.zeros((0, 8)), np.zeros(0))), "no inputs")
api("export_model without calibration", lambda: _export(calibration=None), "calibration")
cli("predict with a decoder run", ["predict", "translation", "hello"], "use `toolkit translate`")
cli("predict with another recipe's run", ["predict", "detection", f"{F}/ok.png", "--run", f"{O}/classification"],
    "is a classification run, not a detection run", "--run")  # fmt: skip
cli("predict with a missing run folder", ["predict", "classification", f"{F}/ok.png", "--run", f"{O}/nowhere"],
    "nowhere: no such run folder")  # fmt: skip
cli("translate with another recipe's run", ["translate", "hello", "--run", f"{O}/sentiment"],
    "is a sentiment run, not a translation run")  # fmt: skip
cli("predict a folder without images", ["predict", "classification", f"{O}", "--run", f"{O}/classification"],
    "holds no images")  # fmt: skip
cli("predict a glob that matches nothing", ["predict", "classification", f"{F}/nothing*.png", "--run",
    f"{O}/classification"], "nothing*.png: no file matches")  # fmt: skip
cli("predict --model with a file the toolkit did not write", ["predict", "--model", f"{F}/plain.tflite", f"{F}/ok.png"],
    "plain.tflite carries no toolkit metadata", "--run")  # fmt: skip
cli("predict --model with a missing file", ["predict", "--model", f"{F}/gone.tflite", f"{F}/ok.png"],
    "gone.tflite: no such model file")  # fmt: skip
cli("predict --model with another recipe's file", ["predict", "sentiment", "fine", "--model", f"{F}/classifier.tflite"],
    "classifier.tflite is a classification model", "not sentiment")  # fmt: skip
cli("predict --model with --format", ["predict", "--model", f"{F}/classifier.tflite", f"{F}/ok.png", "--format",
    "keras"], "--format picks a file in a run folder")  # fmt: skip
cli("predict --model with a run folder", ["predict", "classification", f"{F}/ok.png", "--model", f"{O}/classification"],
    "give a .tflite file")  # fmt: skip
cli("predict node classification from a bare file", ["predict", "node_classification", "--model", f"{F}/classifier.tflite"],
    "is a classification model", "not node_classification")  # fmt: skip
cli("mediapipe for a sentiment run", ["mediapipe", f"{O}/sentiment"], "sentiment run", "classification and detection")
cli("mediapipe with int16x8", ["mediapipe", f"{O}/classification", "--quantization", "int16x8"], "fp32 or int8")
cli("predict texts from a missing file", ["predict", "sentiment", "--file", f"{F}/no_texts.txt", "--run",
    f"{O}/sentiment"], "no_texts.txt: no such text file")  # fmt: skip
api("empty text to predict", lambda: _text().check_text("   ", "text 2"), "text 2: the text is empty")
api("non-UTF-8 bytes to predict", lambda: _text().check_text(b"ok \xff", "text 1"), "not valid UTF-8", "0xff")

# Graphs
cli("edge to an unknown node", [*NODE, "--data", f"edges:{F}/edges_unknown.csv,labels:{F}/labels.csv"],
    "edges_unknown.csv line 3", "node 'z'")  # fmt: skip
cli("negative edge weight", [*NODE, "--data", f"edges:{F}/edges_negative.csv,labels:{F}/labels.csv"],
    "edges_negative.csv line 2", ">= 0")  # fmt: skip
cli("NaN node feature", [*NODE, "--data", f"edges:{F}/edges.csv,labels:{F}/labels.csv,features:{F}/features_nan.csv"],
    "features_nan.csv line 3", "not a finite number")  # fmt: skip
cli("graph without labels", [*NODE, "--data", f"edges:{F}/edges.csv"], "give labels too")
cli("--distribute on one graph", [*NODE, "--data", "karate", "--distribute"], "no batch to split")

# Detection, segmentation and multi-task data
DET = ("run", "detection", "--output", O, "--epochs", "1")
SEG = ("run", "segmentation", "--output", O, "--epochs", "1")
MT = ("run", "multitask", "--output", O, "--epochs", "1")
cli("box outside its image", [*DET, "--data", f"coco:{F}/coco/outside.json"], "outside.json", "annotation id 1",
    "outside the 40x30 image")  # fmt: skip
cli("box of an unknown category", [*DET, "--data", f"coco:{F}/coco/category.json"], "category.json",
    "annotation id 1 has category id 99")  # fmt: skip
cli("COCO file that is not JSON", [*DET, "--data", f"coco:{F}/coco/broken.json"], "broken.json: not valid JSON")
cli("COCO split files sharing an image", [*DET, "--data", f"coco:{F}/coco/good.json,val={F}/coco/val_shared.json"],
    "image img3.png", "train file", "good.json", "validation file", "val_shared.json")  # fmt: skip
cli("COCO split files with other categories", [*DET, "--data",
    f"coco:{F}/coco/good.json,test={F}/coco/test_categories.json"], "categories differ", "good.json",
    "test_categories.json", "id 1 is 'sock' in the first and 'shoe'")  # fmt: skip
cli("missing COCO split file", [*DET, "--data", f"coco:{F}/coco/good.json,test={F}/coco/nowhere.json"],
    "nowhere.json does not exist")  # fmt: skip
cli("split fraction outside [0, 1)", [*DET, "--test-fraction", "1.5"], "--test-fraction", "[0, 1)", "'1.5'")
cli("head dropout of 1 or more", ["run", "generation", "--output", O, "--head-dropout", "1"], "--head-dropout",
    "[0, 1)", "'1'")  # fmt: skip
cli("pointer dropout without a pointer", ["run", "generation", "--output", O, "--data", "hamlet", "--backbone-option",
    "tied_output=False", "--backbone-option", "pointer_dropout=0.3"], "pointer_dropout needs pointer_window")  # fmt: skip
cli("split fractions summing to 1", [*CLS, "--validation-fraction", "0.5", "--test-fraction", "0.5"],
    "--validation-fraction 0.5 and --test-fraction 0.5 sum to 1 or more")  # fmt: skip
cli("mask of the wrong size", [*SEG, "--data", f"folder:{F}/seg_size"], "007.png", "mask is 16x16",
    "image is 32x32")  # fmt: skip
cli("image without its mask", [*SEG, "--data", f"folder:{F}/seg_missing"], "007.png does not exist")
cli("mask value outside the classes", [*SEG, "--data", f"folder:{F}/seg_value"], "007.png", "mask value 7",
    "0..2")  # fmt: skip
cli("segmentation size not a multiple of 32", [*SEG, "--image-size", "100"], "divisible by 32", "100x100")
cli("unknown multi-task head", [*MT, "--heads", "detection,depth"], "unknown head 'depth'")
cli("malformed head weights", [*MT, "--head-weights", "detection"], "--head-weights", "'detection'")
cli("predict segmentation a missing image", ["predict", "segmentation", f"{F}/nope.png", "--run",
    f"{O}/segmentation", "--format", "keras"], "nope.png: no such image file")  # fmt: skip

# Names
cli("unknown command", ["trian"], "unknown command 'trian'", "train")
cli("unknown recipe", ["run", "clasification"], "unknown recipe 'clasification'", "classification")
cli("unknown backbone", [*CLS, "--backbone", "resnet9000"], "unknown backbone 'resnet9000'")
cli("backbone of the wrong kind", [*SENT, "--backbone", "resnet", "--data", f"csv:{F}/good.csv"],
    "'resnet' is not a text backbone")  # fmt: skip
cli("unknown backbone option", [*CLS, "--backbone", "edgenet", "--backbone-option", "wdith=2"], "wdith")
cli("unknown data source", [*CLS, "--data", "imagenet:/x"], "unknown data source 'imagenet:/x'")
cli("unknown graph source", [*NODE, "--data", "cora"], "unknown graph data source 'cora'")
cli("unknown export format", ["predict", "classification", f"{F}/ok.png", "--run", f"{O}/classification",
    "--format", "onnx"], "unknown format 'onnx'")  # fmt: skip

# Malformed config values
cli("zero epochs", [*CLS, "--epochs", "0"], "--epochs", "positive integer", "'0'")
cli("epochs not a number", [*CLS, "--epochs", "ten"], "--epochs", "'ten'")
cli("NaN learning rate", [*CLS, "--learning-rate", "nan"], "--learning-rate", "'nan'")
cli("fractional batch size", [*CLS, "--batch-size", "1.5"], "--batch-size", "'1.5'")
cli("backbone option without a value", [*CLS, "--backbone-option", "width"], "'width' must look like KEY=VALUE")
cli("--resume with --restart", [*NODE, "--data", "karate", "--resume", "--restart"], "contradict")

# Output folder and names
cli("run name with a path", [*CLS, "--name", "../escaped"], "run name '../escaped'", "no path")
cli("absolute run name", [*CLS, "--name", "/tmp/escaped"], "run name '/tmp/escaped'")
cli("hidden run name", [*CLS, "--name", ".hidden"], "run name '.hidden'")
cli("output is a file", [*NODE, "--data", "karate", "--output", f"{F}/a_file"], "cannot write to output folder")
cli("read-only output folder", [*NODE, "--data", "karate", "--output", "{readonly}"], "Read-only file system")
cli("--resume without an interrupted run", [*NODE, "--data", "karate", "--resume"], "no interrupted run")

# Saved artifacts
cli(".keras that is not a zip", ["predict", "classification", f"{F}/ok.png", "--run", f"{F}/run_garbage",
    "--format", "keras"], "model.keras: not a Keras model file")  # fmt: skip
cli(".keras without a config", ["predict", "classification", f"{F}/ok.png", "--run", f"{F}/run_noconfig",
    "--format", "keras"], "no config.json")  # fmt: skip
cli(".keras carrying a Lambda", ["predict", "classification", f"{F}/ok.png", "--run", f"{F}/run_lambda",
    "--format", "keras"], "carries Python code", "--unsafe-load")  # fmt: skip

# Backbone presets (--backbone-preset, toolkit backbones --presets)
cli("preset folder without config.json", [*CLS, "--backbone-preset", f"{F}/preset_noconfig"],
    "preset_noconfig is not a backbone preset", "no config.json")  # fmt: skip
cli("preset that is not a folder", [*CLS, "--backbone-preset", f"{F}/ok.png"], "ok.png is not a folder")
cli("preset config.json that is not JSON", [*CLS, "--backbone-preset", f"{F}/preset_badjson"],
    "preset_badjson/config.json is not valid JSON")  # fmt: skip
cli("preset naming an unknown backbone", [*CLS, "--backbone-preset", f"{F}/preset_unknown"],
    "config.json names backbone 'vgg99'")  # fmt: skip
cli("preset with an unknown option", [*CLS, "--backbone-preset", f"{F}/preset_badoption"],
    "config.json", "has no option depth_multiplier")  # fmt: skip
cli("preset without weights", [*CLS, "--backbone-preset", f"{F}/preset_noweights"], "has no model.weights.h5")
cli("preset weights that do not fit its config", [*CLS, "--data", f"folder:{F}/good", "--backbone-preset",
    f"{F}/preset_misfit"], "preset_misfit/model.weights.h5 does not fit backbone")  # fmt: skip
cli("preset weights that are not weights", [*CLS, "--data", f"folder:{F}/good", "--backbone-preset",
    f"{F}/preset_garbage"], "preset_garbage/model.weights.h5 does not fit backbone")  # fmt: skip
cli("--backbone contradicting the preset", [*CLS, "--backbone", "resnet", "--backbone-preset", f"{F}/preset_ok"],
    "--backbone resnet contradicts", "'edgenet' backbone")  # fmt: skip
cli("--backbone-option beside a preset", [*CLS, "--backbone-option", "width=2", "--backbone-preset",
    f"{F}/preset_ok"], "--backbone-option width=2", "fixes its backbone's options")  # fmt: skip
cli("KerasHub preset of an unsupported class", [*CLS, "--backbone-preset", f"{F}/preset_hub_bert"],
    "KerasHub class 'BertBackbone' has no toolkit builder")  # fmt: skip
cli("text preset without its vocabulary", [*SENT, "--backbone-preset", f"{F}/preset_text_novocab"],
    "has no assets/vocab.txt")  # fmt: skip
cli("vision preset for a text recipe", [*SENT, "--data", f"csv:{F}/good.csv", "--backbone-preset", f"{F}/preset_ok"],
    "'edgenet' is not a text backbone")  # fmt: skip
cli("list presets in a missing folder", ["backbones", "--presets", f"{F}/nowhere"], "nowhere does not exist")
cli("list presets where there are none", ["backbones", "--presets", f"{F}/no_images"], "no backbone preset")
cli("benchmark a folder that is not a run", ["benchmark", f"{F}/good"], "report.json")


def _images():
    from toolkit.data import images

    return images


def _export(task="classification", test=(np.zeros((4, 8)), np.zeros(4)), calibration=np.zeros((4, 8))):
    from toolkit.export.api import export_model

    return export_model(None, "never_written", task=task, test=test, calibration=calibration)


def _intensity_file(text):
    import tempfile

    from toolkit.data import intensity

    folder = tempfile.mkdtemp(prefix="run-")
    _write(f"{folder}/intensity.json", text)
    return intensity.load(folder)


def _text():
    from toolkit.data import texts as text

    return text


def _pixels(value):
    x = np.zeros((20, 8, 8, 1), np.float32)
    x[3, 2, 2, 0] = value
    return x


def _arrays(images=None, labels=None):
    images = np.zeros((20, 8, 8, 1), np.uint8) if images is None else images
    labels = np.arange(len(images)) % 2 if labels is None else labels
    return _images().from_arrays(images, labels, class_names=["a", "b"])


def _png(path, size=(12, 12)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def _tiny_model(path, with_lambda=False):
    import keras

    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t / 255.0)(x)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    f = str(root)
    for folder in ("good", "truncated", "corrupt", "empty_file"):  # enough images for every split, then one bad
        for c in ("a", "b"):
            for i in range(16):  # 16 names per class put at least one image of each class in each split
                _png(f"{f}/{folder}/{c}/{c}{i}.png")
    _png(f"{f}/ok.png")
    ok = open(f"{f}/ok.png", "rb").read()
    _write(f"{f}/truncated/b/cut.png", ok[: len(ok) // 2])
    _write(f"{f}/corrupt/b/noise.jpg", np.random.default_rng(1).bytes(500))
    _write(f"{f}/empty_file/b/empty.png", b"")
    _tiffs(f)
    _png(f"{f}/one_class/a/1.png")
    os.makedirs(f"{f}/no_images/a"), os.makedirs(f"{f}/no_images/b")
    rows = "".join(
        f"film number {i} was {'good' if i % 2 else 'bad'},{'good' if i % 2 else 'bad'}\n" for i in range(40)
    )
    _write(f"{f}/good.csv", "text,label\n" + rows)
    _write(f"{f}/empty_text.csv", "text,label\nfine film,good\n   ,bad\n" + rows)
    _write(f"{f}/latin1.csv", "text,label\n".encode() + "caf\xe9 cr\xe8me,good\n".encode("latin-1") + rows.encode())
    _write(f"{f}/broken.jsonl", '{"text": "fine", "label": "good"}\n{"text": "oops", "label": \n')
    _write(f"{f}/header_only.csv", "text,label\n")
    _write(f"{f}/one_label.csv", "text,label\na,good\nb,good\nc,good\n")
    _write(f"{f}/broken.mo", b"\xde\x12\x04\x95 not a catalogue")
    _write(f"{f}/one_word.po", 'msgid ""\nmsgstr ""\n\nmsgid "Open"\nmsgstr "Ouvrir"\n')
    _write(f"{f}/labels.csv", "node,label\nx,0\ny,1\nw,1\n")
    _write(f"{f}/edges.csv", "source,target\nx,y\ny,w\n")
    _write(f"{f}/edges_unknown.csv", "source,target\nx,y\ny,z\n")
    _write(f"{f}/edges_negative.csv", "source,target,weight\nx,y,-1\n")
    _write(f"{f}/features_nan.csv", "node,f1\nx,1\ny,nan\nw,2\n")
    _write(f"{f}/a_file", "not a folder")
    for name in ("run_garbage", "run_noconfig", "run_lambda"):
        _write(f"{f}/{name}/labels.txt", "a\nb\n")
    _write(f"{f}/run_garbage/model.keras", b"this is not a model")
    with zipfile.ZipFile(f"{f}/run_noconfig/model.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    _tiny_model(f"{f}/run_lambda/model.keras", with_lambda=True)
    _coco(f"{f}/coco")
    _presets(f)
    _write(f"{f}/plain.tflite", b"TFL3 not toolkit written")  # a model file without toolkit metadata
    described = io.BytesIO(b"TFL3 stands in for a classifier's flatbuffer")
    described.seek(0, os.SEEK_END)
    with zipfile.ZipFile(described, "a") as archive:  # what toolkit.export.metadata packs onto a file
        archive.writestr("toolkit.json", json.dumps({"toolkit_metadata": 1, "task": "classification",
                                                     "recipe": "classification", "format": "tflite_int8"}))  # fmt: skip
        archive.writestr("labels.txt", "a\nb\n")
    _write(f"{f}/classifier.tflite", described.getvalue())
    for name, mutate in (
        ("seg_size", lambda masks: masks.update({7: np.zeros((16, 16), np.uint8)})),
        ("seg_missing", lambda masks: masks.pop(7)),
        ("seg_value", lambda masks: masks[7].__setitem__((3, 3), 7)),
    ):
        masks = {i: (np.arange(32 * 32).reshape(32, 32) % 3).astype(np.uint8) for i in range(40)}
        mutate(masks)
        for i in range(40):
            _png(f"{f}/{name}/images/{i:03d}.png", (32, 32))
        os.makedirs(f"{f}/{name}/masks")
        for i, mask in masks.items():
            Image.fromarray(mask).save(f"{f}/{name}/masks/{i:03d}.png")
        _write(f"{f}/{name}/classes.txt", "background\nsock\nhat\n")
    return f


def _tiffs(f):
    """Folders of good 8-bit PNGs plus one bad image each: TIFFs with 4 or 2 channels, float pixels or cut
    short, and a 16-bit PNG among the 8-bit ones."""
    import tensorflow as tf
    import tifffile

    bad = {
        "tiff_four": ("four.tif", np.zeros((12, 12, 4), np.uint8), {"photometric": "rgb"}),
        "tiff_two": ("two.tif", np.zeros((12, 12, 2), np.uint8), {"photometric": "minisblack",
                                                                  "planarconfig": "contig"}),
        "tiff_float": ("float.tif", np.zeros((12, 12), np.float32), {}),
        "tiff_cut": ("cut.tif", np.arange(144, dtype=np.uint16).reshape(12, 12), {}),
    }
    for folder, (name, pixels, options) in bad.items():
        for c in ("a", "b"):
            for i in range(16):
                _png(f"{f}/{folder}/{c}/{c}{i}.png")
        tifffile.imwrite(f"{f}/{folder}/b/{name}", pixels, **options)
    whole = open(f"{f}/tiff_cut/b/cut.tif", "rb").read()
    _write(f"{f}/tiff_cut/b/cut.tif", whole[: len(whole) // 2])
    for c in ("a", "b"):
        for i in range(16):
            _png(f"{f}/mixed_depth/{c}/{c}{i}.png")
    tf.io.write_file(f"{f}/mixed_depth/b/deep.png", tf.io.encode_png(np.full((12, 12, 1), 4000, np.uint16)))


def _presets(f):
    """A real edgenet preset, and broken copies of it."""
    import shutil

    from toolkit import backbones

    good = backbones.save_preset(f"{f}/preset_ok", backbones.get("edgenet", (32, 32, 3), width=0.25))
    config = json.load(open(f"{good}/config.json"))
    os.makedirs(f"{f}/preset_noconfig")
    shutil.copy(f"{good}/metadata.json", f"{f}/preset_noconfig/")
    for name, edit in (
        ("preset_badjson", None),
        ("preset_unknown", lambda c: c.update(class_name="vgg99")),
        ("preset_badoption", lambda c: c["config"].update(depth_multiplier=2)),
        ("preset_misfit", lambda c: c["config"].update(width=0.5)),
        ("preset_noweights", lambda c: None),
        ("preset_garbage", lambda c: None),
        ("preset_hub_bert", lambda c: c.update(module="keras_hub.src.models.bert.bert_backbone",
                                               class_name="BertBackbone", registered_name="keras_hub>BertBackbone")),
        ("preset_text_novocab", lambda c: c.update(class_name="birnn", config={"input_shape": [16]})),
    ):  # fmt: skip
        shutil.copytree(good, f"{f}/{name}")
        if edit is None:
            _write(f"{f}/{name}/config.json", '{"module": "toolkit.backbones", ')
            continue
        changed = json.loads(json.dumps(config))
        edit(changed)
        _write(f"{f}/{name}/config.json", json.dumps(changed))
    os.remove(f"{f}/preset_noweights/model.weights.h5")
    _write(f"{f}/preset_garbage/model.weights.h5", b"not an h5 file")


def _coco(folder):
    """outside.json: annotation 1's box lies right of its 40x30 image; category.json: annotation 1 has
    category 99; broken.json: cut short; good.json: all 12 images, val_shared.json: images 3 and 4 again,
    test_categories.json: category 1 named otherwise."""
    for i in range(12):
        _png(f"{folder}/img{i}.png", (30, 40))
    good = {
        "images": [{"id": i, "file_name": f"img{i}.png", "width": 40, "height": 30} for i in range(12)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 3, 10, 5]} for i in range(12)],
        "categories": [{"id": 1, "name": "sock"}],
    }
    outside = json.loads(json.dumps(good))
    outside["annotations"][1]["bbox"] = [45, 3, 10, 5]
    category = json.loads(json.dumps(good))
    category["annotations"][1]["category_id"] = 99
    _write(f"{folder}/outside.json", json.dumps(outside))
    _write(f"{folder}/category.json", json.dumps(category))
    _write(f"{folder}/broken.json", json.dumps(good)[:40])
    _write(f"{folder}/good.json", json.dumps(good))
    shared = dict(good, images=good["images"][3:5], annotations=good["annotations"][3:5])
    _write(f"{folder}/val_shared.json", json.dumps(shared))
    _write(f"{folder}/test_categories.json", json.dumps(dict(shared, categories=[{"id": 1, "name": "shoe"}])))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """Previously saved runs, one per recipe name: no bad input may change a byte of them."""
    root = tmp_path_factory.mktemp("saved")
    for name in ("classification", "segmentation", "sentiment", "node_classification"):
        _write(f"{root}/{name}/labels.txt", "a\nb\n")
        _write(f"{root}/{name}/report.json", '{"recipe": "%s"}\n' % name)
        _tiny_model(f"{root}/{name}/model.keras")
    return str(root)


@pytest.fixture(scope="module")
def readonly(tmp_path_factory):
    """A read-only file system (a tmpfs mounted ro: chmod does not stop root)."""
    folder = str(tmp_path_factory.mktemp("readonly"))
    if os.system(f"mount -t tmpfs -o ro,size=64k tmpfs {folder} 2>/dev/null") != 0:
        if os.geteuid() == 0:
            yield None
            return
        os.chmod(folder, 0o555)
    yield folder
    os.system(f"umount {folder} 2>/dev/null")


def _snapshot(folder):
    found = {}
    for d, dirs, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), "rb") as fh:
                found[os.path.relpath(os.path.join(d, n), folder)] = hashlib.sha256(fh.read()).hexdigest()
        found.update({os.path.relpath(os.path.join(d, n), folder): "dir" for n in dirs})
    return found


def _one_clear_line(text, phrases):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "unexpected" not in lines[0], lines[0]
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.mark.parametrize("how, what, phrases", CASES)
def test_bad_input_gets_one_clear_line(how, what, phrases, files, out, readonly):
    before = _snapshot(out)
    if how == "api":
        with pytest.raises(ToolkitError) as caught:
            what()
        _one_clear_line(str(caught.value), phrases)
    else:
        if "{readonly}" in what and readonly is None:
            pytest.skip("cannot make a read-only folder here (not allowed to mount, and root ignores chmod)")
        argv = [a.format(files=files, out=out, readonly=readonly) for a in what]
        stderr, stdout = io.StringIO(), io.StringIO()
        with redirect_stderr(stderr), redirect_stdout(stdout):
            code = toolkit_cli.main(argv)
        assert code == 2, (code, stderr.getvalue(), stdout.getvalue()[-2000:])
        assert _one_clear_line(stderr.getvalue(), phrases).startswith("error: ")
    assert _snapshot(out) == before
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no partial folder left behind


def test_the_suite_tries_at_least_30_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 30


@pytest.mark.slow
def test_a_full_disk_is_one_clear_line_and_the_saved_run_is_kept(files, out):
    """A file-size limit of 1 KB stands in for a full disk (writes fail with EFBIG, as with ENOSPC)."""
    before = _snapshot(out)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    done = run_cli(*[a.format(out=out) for a in NODE], "--data", "karate", preexec_fn=limit)
    assert done.returncode == 2, done.stderr[-2000:]
    line = _one_clear_line(done.stderr, ["cannot write", "File too large"])
    assert line.startswith("error: ")
    assert _snapshot(out) == before


@pytest.mark.slow
def test_a_lambda_model_loads_with_the_explicit_flag(files):
    from toolkit import saving

    model = saving.load_model(f"{files}/run_lambda/model.keras", allow_unsafe=True)
    assert model.predict(np.zeros((1, 12, 12, 3), np.float32), verbose=0).shape == (1, 2)
    done = run_cli("predict", "classification", f"{files}/ok.png", "--run", f"{files}/run_lambda",
                   "--format", "keras", "--unsafe-load")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[1] in ("a", "b")
