"""Self-describing .tflite files (issue 19): TFLite Metadata and the run's labels inside every LiteRT
file, `toolkit predict --model FILE.tflite` from the bare file, and MediaPipe Tasks files checked by
MediaPipe itself (the detector's MediaPipe check is in test_detection, on its trained tiny detector)."""

import json
import shutil

import numpy as np
import pytest

from tests.conftest import SEED, cli_in_process
from toolkit.export import metadata

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def classifier_run(small_images, tmp_path_factory):
    """A tiny RGB classifier trained on small_images (label: the brightest channel), exported with
    toolkit.export_model: every LiteRT format, labels.txt and report.json."""
    import keras

    import toolkit

    keras.utils.set_random_seed(SEED)
    images, labels = small_images
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images.astype("float32"), labels, epochs=30, batch_size=16, verbose=0)
    out = tmp_path_factory.mktemp("described") / "classification"
    report = toolkit.export_model(model, str(out), task="classification", test=(images[:48], labels[:48]),
                                  calibration=images[48:], class_names=LABELS)  # fmt: skip
    return out, report


def test_every_litert_file_carries_its_labels_and_input_metadata(classifier_run):
    generated = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
    run, report = classifier_run
    for fmt in ("tflite_fp32", "tflite_int8"):
        path = run / f"model_{fmt.split('_', 1)[1]}.tflite"
        found = metadata.read(str(path))
        assert found["labels"] == LABELS
        assert found["description"]["task"] == "classification" and found["description"]["format"] == fmt
        buffer = metadata.metadata_buffer(str(path))
        assert generated.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
        parsed = generated.ModelMetadataT.InitFromPackedBuf(buffer, 0)
        (image,) = parsed.subgraphMetadata[0].inputTensorMetadata
        assert image.content.contentProperties.colorSpace == generated.ColorSpaceType.RGB
        options = image.processUnits[0].options
        assert list(options.mean) == [0.0] and list(options.std) == [1.0]  # raw pixels: normalised inside
        (scores,) = parsed.subgraphMetadata[0].outputTensorMetadata
        assert [(f.name, f.type) for f in scores.associatedFiles] == [
            (b"labels.txt", generated.AssociatedFileType.TENSOR_AXIS_LABELS)]
    # the file scored on the test split is the self-describing one: the interpreter ignores the zip
    assert report["formats"]["tflite_fp32"]["max_abs_diff"] <= 1e-4


def test_predict_from_the_bare_file_matches_the_run(classifier_run, small_images, tmp_path):
    from PIL import Image

    run, _ = classifier_run
    lone = tmp_path / "phone" / "classifier.tflite"
    lone.parent.mkdir()
    shutil.copyfile(run / "model_int8.tflite", lone)
    files = []
    for i in range(4):
        files.append(str(tmp_path / f"image{i}.png"))
        Image.fromarray(small_images[0][i]).save(files[-1])
    bare = cli_in_process("predict", "--model", str(lone), *files, "--json")
    assert bare.returncode == 0, bare.stderr
    from_run = cli_in_process("predict", "classification", *files, "--run", str(run), "--format", "tflite_int8",
                              "--json")
    assert from_run.returncode == 0, from_run.stderr
    assert bare.stdout == from_run.stdout
    records = [json.loads(line) for line in bare.stdout.splitlines()]
    assert [r["predictions"][0]["label"] for r in records] == [LABELS[int(c)] for c in small_images[1][:4]]


def test_mediapipe_image_classifier_reads_the_file_as_litert_does(classifier_run):
    pytest.importorskip("mediapipe")
    from toolkit.export import mediapipe

    from toolkit import cli
    from toolkit.runs import MEDIAPIPE_RECORD_FILE

    run, report = classifier_run
    assert cli.main(["mediapipe", str(run), "--check", "48"]) == 0
    record = json.loads((run / MEDIAPIPE_RECORD_FILE).read_text())  # what the command measured, per file
    entry, check = record["model_mediapipe.tflite"]["entry"], record["model_mediapipe.tflite"]["mediapipe_check"]
    assert entry["drop_points"] == 0.0 and entry["max_abs_diff"] <= 1e-4  # the wrapper changes no output
    assert check["images"] == 48 and check["top1_agreement"] == 1.0 and check["max_score_diff"] <= 1e-5


def test_embedding_twice_replaces_the_metadata(classifier_run, small_images):
    from toolkit.export import litert

    run, _ = classifier_run
    data = (run / "model_fp32.tflite").read_bytes()
    flat = metadata.model_metadata("again", "y", "1", [metadata.tensor("a")], [metadata.tensor("b")])
    again = metadata.embed(data, flat, {"toolkit.json": b"{}"})
    assert metadata.signature_names(again) == metadata.signature_names(data)
    assert metadata.read_packed(again) == {"toolkit.json": b"{}"}  # the old zip is replaced, not stacked
    assert metadata.metadata_buffer(again) == flat
    path = run.parent / "again.tflite"
    path.write_bytes(again)
    x = small_images[0][:8].astype(np.float32)
    assert np.array_equal(litert.LiteRTModel(str(path)).predict(x), litert.LiteRTModel(str(run / "model_fp32.tflite")).predict(x))
