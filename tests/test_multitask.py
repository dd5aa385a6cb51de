"""Multi-task: one backbone feeding detection, segmentation and presence heads, one LiteRT file with every output."""

import json
import os

import numpy as np
import pytest

from tests.conftest import SEED, cli_in_process, margin, run_pyramid_recipe, tiny_scenes
from tests.contracts import run_task_contract
from toolkit.errors import ToolkitError
from toolkit.tasks import multitask

OUTPUTS = {"boxes", "scores", "classes", "num_detections", "class_map", "presence"}
# The presence head of this tiny model (a 2x2 P5 of an 8-32-channel backbone, 256 scenes) barely
# generalises: held-out mean ROC AUC 0.538-0.62 over seeds and kernel paths (0.538: seed 0, oneDNN
# off, under the old bar 0.55), accuracy within noise of the majority vote. A held-out bar there
# tests the CPU, not the code. So this test checks that the head learnt the ranking it was trained
# on (mean ROC AUC on its training scenes; 0.5 for any constant); the recipe-scale figure of the
# presence head on held-out scenes is in benchmarks/RESULTS.md (multitask). tests/README.md has the audit.
PRESENCE_AUC_BAR = 0.8
TEST_SCENES = 192


def tiny_multitask(heads=multitask.HEADS):
    return multitask.build("resnet", (64, 64, 1), 3, heads, neck_channels=16, head_channels=16, head_depth=1,
                           widths=(8, 16, 32, 32), stem_width=8)  # fmt: skip


def scenes_with_labels(count, seed):
    """Images, the training targets for every head, and the packed test labels by head."""
    images, truth, masks = tiny_scenes(count, seed)
    return images, multitask.labels_from_ground_truth(truth, masks, 3)


def targets_of(labels):
    from toolkit.tasks import detection

    packed = labels["detection"]
    maps = detection.encode_targets(packed[..., :4], packed[..., 4].astype(np.int32), (64, 64), 3)
    return {**{k: np.asarray(v) for k, v in maps.items()}, "segmentation": labels["segmentation"].astype(np.int32),
            "presence": labels["classification"]}  # fmt: skip


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    import keras

    from toolkit import training

    keras.utils.set_random_seed(SEED)
    images, labels = scenes_with_labels(256, seed=1)
    test_images, test_labels = scenes_with_labels(TEST_SCENES, seed=0)
    # the presence head sees a 2x2 P5 of a tiny backbone: a larger loss weight lets it keep up (and tests the weights)
    model = multitask.compile(tiny_multitask(), 5e-3, total_steps=12 * 16, head_weights={"classification": 4.0})
    run = tmp_path_factory.mktemp("multitask_run")
    batches = [images[i : i + 16] for i in range(0, len(images), 16)]  # batch norm recomputed as training.fit does
    history, formats, outputs = run_task_contract("multitask", model, (images, targets_of(labels)),
                                                  (test_images, test_labels), images[:32], run, epochs=12,
                                                  after_fit=lambda m: training.recalibrate_batch_norm(m, batches))  # fmt: skip
    trained = {"truth": labels["classification"] > 0.5, "presence": model.predict(images, verbose=0)["presence"]}
    return run, history, formats, outputs, trained


@pytest.mark.learned
def test_one_backbone_learns_every_head_jointly(exported_run):
    _, history, formats, _, trained = exported_run
    for key in ("heatmap_loss", "edges_loss", "segmentation_loss", "presence_loss"):  # every head's loss falls
        margin(f"{key} last/first epoch", history[key][-1] / history[key][0], 0.8, trivial=1.0, higher=False)
    keras_row = formats["keras"]
    # predicting background everywhere would score mIoU ~0.23 (background ~0.9, three classes 0)
    margin("mIoU", keras_row["miou"], 0.35, trivial=0.23)
    margin("mAP@.5", keras_row["map50"], 0.2, trivial=0.0)
    from sklearn.metrics import roc_auc_score

    truth, presence = trained["truth"], trained["presence"]
    auc = np.mean([roc_auc_score(truth[:, c], presence[:, c]) for c in range(truth.shape[1])])
    margin("presence mean ROC AUC on its training scenes", auc, PRESENCE_AUC_BAR, trivial=0.5)
    assert keras_row["mean_head_score"] == pytest.approx(
        np.mean([keras_row["map"], keras_row["miou"], keras_row["presence_exact"]])
    )


@pytest.mark.learned
def test_one_litert_file_holds_every_output_and_matches_keras(exported_run):
    import keras

    from toolkit.export.litert import LiteRTModel

    run, _, formats, outputs, _ = exported_run
    assert set(outputs) == OUTPUTS
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert sum(isinstance(layer, keras.Model) for layer in model.layers) == 1  # one backbone instance
    for name in ("fp32", "int8"):
        runtime = LiteRTModel(str(run / f"model_{name}.tflite"))
        assert set(runtime.output_names) == OUTPUTS, runtime.output_names
        ops = {op["op_name"] for op in runtime.interpreter._get_ops_details()}
        assert "ARG_MAX" in ops and "WHILE" in ops, ops  # arg-max and NMS inside the one file
    fp32 = formats["tflite_fp32"]
    assert fp32["differing_pixels"] <= 1e-4
    # the same detections (detection.compare), presence within 1e-4; the raw maps match tightly
    # >= 0.97: detections near the 0.05 score threshold or an NMS tie come and go between kernels (0.988
    # of the multi-task model's were identical with seed 1 and oneDNN off; its mAP equal to 2e-3)
    assert fp32["identical_detections"] >= 0.97 and fp32["max_abs_diff"] <= 1e-3, fp32
    assert fp32["raw_max_abs_diff"] <= 1e-4, fp32
    for key in ("map", "miou", "presence_exact"):
        assert fp32[key] == pytest.approx(formats["keras"][key], abs=2e-3), key
        margin(f"|int8 - keras| {key}", abs(formats["tflite_int8"][key] - formats["keras"][key]), 0.1, higher=False)


def test_heads_are_checked_and_one_head_is_a_single_task_model():
    with pytest.raises(ToolkitError, match="head"):
        multitask.check_heads(["detection", "depth"])
    with pytest.raises(ToolkitError, match="at least one head"):
        multitask.check_heads([])
    from toolkit.tasks import detection

    model = tiny_multitask(("classification",))
    assert set(model.output) == {"presence"}
    assert set(multitask.inference_model(model).output) == {"presence"}
    # int8 keeps the detection decoder in float only where there is one to keep
    assert multitask.TASK.float_layers_of(multitask.inference_model(model)) == ()
    assert multitask.TASK.float_layers_of(multitask.inference_model(tiny_multitask())) == detection.FLOAT_LAYERS


def test_default_flags_parse_and_head_weights_are_checked():
    from recipes import multitask as recipe

    args = recipe.parse_args([])  # the default run: every head, segmentation weighing 2 (chosen on validation)
    assert args.heads == multitask.HEADS and args.head_weights == {"segmentation": 2.0}
    assert recipe.parse_args(["--head-weights", ""]).head_weights == {}  # every head weighs 1
    assert recipe.parse_args(["--head-weights", "segmentation=0.5"]).head_weights == {"segmentation": 0.5}
    with pytest.raises(ToolkitError, match="unknown head 'depth'"):
        recipe.parse_args(["--head-weights", "depth=1"])


@pytest.mark.slow
def test_recipe_from_the_command_line(tmp_path, scenes_data_dir):
    """`toolkit run multitask` on the embedded scenes (built into a temporary data dir, resized to 64 px),
    one epoch of a tiny backbone on 256 scenes composed afresh (--scenes-per-epoch): one run folder, one
    LiteRT file per format with every head's outputs."""
    tiny_scenes(1, 1)  # skips when Fashion-MNIST is not installed
    run, report = run_pyramid_recipe(
        "multitask", tmp_path / "runs", "--data", "scenes", "--data-dir", scenes_data_dir, "--image-size", "64",
        "--epochs", "1", "--batch-size", "64", "--head-depth", "1", "--backbone-option", "depths=(1,1,1,1)",
        "--scenes-per-epoch", "256",
    )  # fmt: skip
    assert report["split_sizes"]["train"] == 256
    assert report["metric"] == multitask.METRIC and report["heads"] == list(multitask.HEADS)
    assert set(report["outputs"]) == OUTPUTS
    for fmt in ("keras", "tflite_fp32", "tflite_int8"):
        assert {"map", "miou", "presence_exact"} <= set(report["formats"][fmt]), fmt
    assert report["formats"]["tflite_fp32"]["miou"] == pytest.approx(report["formats"]["keras"]["miou"], abs=2e-3)
    for name in ("model.keras", "model_fp32.tflite", "model_int8.tflite", "detections.png", "segmentation.png"):
        assert (run / name).is_file(), name
    # `toolkit predict multitask` on a folder of the user's images: one JSON object per image, every head
    from PIL import Image

    images = tiny_scenes(2, 3)[0]
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0].astype("uint8")).save(tmp_path / f"scene{i}.png")
    done = cli_in_process("predict", "multitask", str(tmp_path), "--run", str(run), "--format", "tflite_fp32", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in found] == [str(tmp_path / f"scene{i}.png") for i in range(2)]
    for record in found:
        heads = {p["head"] for p in record["predictions"]}
        assert {"segmentation", "classification"} <= heads, record  # detection rows only above --min score
        presence = [p for p in record["predictions"] if p["head"] == "classification"]
        assert len(presence) == len((run / "labels.txt").read_text().splitlines())
        assert all(0 <= p["value"] <= 1 for p in presence)
        stem = os.path.basename(record["input"])[: -len(".png")]
        wrote = sorted(os.path.basename(w) for w in record["wrote"])
        assert wrote == [f"{stem}.detections.png", f"{stem}.segmentation.png"]


def test_a_one_head_model_exports_and_is_scored_in_every_format(tmp_path):
    """The presence head alone (the benchmark's single-task classifier): Keras names its one output,
    a one-output LiteRT file returns a bare array; every format is scored under the same name."""
    import keras

    from toolkit.export import pipeline

    keras.utils.set_random_seed(0)
    images, labels = scenes_with_labels(24, seed=1)
    model = multitask.compile(tiny_multitask(("classification",)), 1e-3, total_steps=1)
    labels = {"classification": labels["classification"]}
    formats, outputs = pipeline.finish_run(str(tmp_path), multitask.inference_model(model), "multitask", images,
                                           labels, images[:8])  # fmt: skip
    assert set(outputs) == {"presence"}
    for fmt in ("keras", "saved_model", "tflite_fp32", "tflite_int8"):
        assert 0 <= formats[fmt]["presence_exact"] <= 1, fmt
    assert formats["tflite_fp32"]["presence_exact"] == formats["keras"]["presence_exact"]
