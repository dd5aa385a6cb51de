"""Segmentation: the metric against hand counts and Keras, a segmenter that learns, export with the
arg-max inside, the data loaders' checks, and the recipe from the command line."""

import keras
import numpy as np
import pytest

from tests.conftest import SEED, cli_fails, cli_in_process, margin, run_cli, run_pyramid_recipe, tiny_scenes
from tests.contracts import run_task_contract
from toolkit.errors import ToolkitError
from toolkit.metrics import segmentation as metrics
from toolkit.tasks import segmentation


def tiny_scene_masks(count, seed):
    """(images float32 (N, 64, 64, 1), masks int32 (N, 64, 64)): scenes of 1-2 items of 3 classes."""
    images, _, masks = tiny_scenes(count, seed)
    return images, masks


def tiny_segmenter(num_classes=4):
    return segmentation.build("resnet", (64, 64, 1), num_classes, neck_channels=16, head_channels=16, head_depth=1,
                              widths=(8, 16, 32, 32), stem_width=8)  # fmt: skip


def test_metric_matches_a_hand_count_and_keras_mean_iou():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    predicted = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    found = metrics.evaluate(predicted, truth, 4)
    # class 0: tp 2, fp 1, fn 1 -> 2/4; class 1: tp 2, fn 0, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2;
    # class 3 appears nowhere: not counted; the void pixel (255) is left out of everything
    assert found["per_class_iou"] == pytest.approx({0: 0.5, 1: 2 / 3, 2: 0.5})
    assert found["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert found["pixel_accuracy"] == pytest.approx(5 / 7)
    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 5, (3, 16, 16)), rng.integers(0, 5, (3, 16, 16))
    predicted[truth == 4] = 0  # class 4 never predicted: IoU 0, still counted
    reference = keras.metrics.MeanIoU(5)
    reference.update_state(truth.reshape(-1), predicted.reshape(-1))
    assert metrics.evaluate(predicted, truth, 5)["miou"] == pytest.approx(float(reference.result()), abs=1e-6)
    assert segmentation.score(predicted.astype(np.uint8), truth)["miou"] == pytest.approx(float(reference.result()))


def test_loss_ignores_void_pixels_and_rewards_the_right_class():
    loss = segmentation.SegmentationLoss(3)
    truth = np.array([[[1, 2], [0, 255]]])
    right = np.eye(3, dtype=np.float32)[[[[1, 2], [0, 0]]]] * 8  # logits (1, 2, 2, 3)
    wrong = np.eye(3, dtype=np.float32)[[[[2, 0], [1, 0]]]] * 8
    assert float(loss(truth, right)) < 0.1 and float(loss(truth, wrong)) > 2.0
    void_changed = right.copy()
    void_changed[0, 1, 1] = [0, 0, 8]  # the void pixel's prediction changes nothing
    assert float(loss(truth, void_changed)) == pytest.approx(float(loss(truth, right)), abs=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(segmentation.SegmentationLoss(3, 0.5, [1, 2, 3])))
    assert restored.get_config()["class_weights"] == [1.0, 2.0, 3.0]


@pytest.mark.learned
def test_tiny_segmenter_learns_on_scenes():
    keras.utils.set_random_seed(SEED)
    images, masks = tiny_scene_masks(384, seed=1)
    test_images, test_masks = tiny_scene_masks(96, seed=0)
    model = segmentation.compile(tiny_segmenter(), 5e-3, total_steps=12 * 24)
    history = model.fit(images, masks, batch_size=16, epochs=12, verbose=0).history["loss"]
    margin("loss last/first epoch", history[-1] / history[0], 0.5, trivial=1.0, higher=False)
    found = segmentation.score(segmentation.inference_model(model).predict(test_images, verbose=0), test_masks, 4)
    background = float(np.mean(test_masks == 0))  # pixel accuracy of "background everywhere"
    # held-out scenes with items the model never saw; background everywhere: mIoU = background / 4
    margin("mIoU", found["miou"], 0.55, trivial=background / 4)
    margin("pixel accuracy", found["pixel_accuracy"], 0.9, trivial=background)


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """A tiny trained segmenter through the task contract and the shared export path (SavedModel, LiteRT
    fp32 and int8)."""
    keras.utils.set_random_seed(SEED)
    images, masks = tiny_scene_masks(128, seed=1)
    test_images, test_masks = tiny_scene_masks(32, seed=0)
    model = segmentation.compile(tiny_segmenter(), 5e-3, total_steps=4 * 8)
    run = tmp_path_factory.mktemp("segmentation_run")
    _, formats, outputs = run_task_contract("segmentation", model, (images, masks),
                                            (test_images, test_masks.astype(np.uint8)), images[:32], run)  # fmt: skip
    return run, formats, outputs


@pytest.mark.learned
def test_export_keeps_the_argmax_inside_and_matches_keras(exported_run):
    from ai_edge_litert.interpreter import Interpreter

    run, formats, outputs = exported_run
    assert outputs.dtype == np.uint8 and outputs.shape == (32, 64, 64)
    for name in ("tflite_fp32", "tflite_int8"):
        interpreter = Interpreter(model_path=str(run / f"model_{name[7:]}.tflite"))
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert "ARG_MAX" in ops, (name, ops)  # builtin, inside the file
        (output,) = interpreter.get_output_details()
        assert output["dtype"] == np.uint8 and tuple(output["shape"][1:]) == (64, 64), output
    # fp32 gives the Keras class map (a tie between two logits could flip a pixel: allow one in 10^4)
    assert formats["saved_model"]["max_abs_diff"] == 0
    assert formats["tflite_fp32"]["differing_pixels"] <= 1e-4
    assert formats["tflite_fp32"]["miou"] == pytest.approx(formats["keras"]["miou"], abs=1e-3)
    margin("|int8 - keras| mIoU", abs(formats["tflite_int8"]["miou"] - formats["keras"]["miou"]), 0.05, higher=False)
    margin("int8 pixels differing from keras", formats["tflite_int8"]["differing_pixels"], 0.05, higher=False)


def test_build_refuses_sizes_and_class_counts_it_cannot_use():
    with pytest.raises(ToolkitError, match="divisible by 32"):
        segmentation.build("resnet", (100, 100, 1))
    with pytest.raises(ToolkitError, match="at least 2 classes"):
        segmentation.build("resnet", (64, 64, 1), 1)


def write_folder(root, images, masks, names=("background", "tshirt", "trouser", "pullover")):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image[..., 0].astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i:03d}.png")
    if names:
        (root / "classes.txt").write_text("\n".join(names) + "\n")


def test_folder_loader_reads_index_and_palette_masks(tmp_path):
    from PIL import Image

    from toolkit.data import segmentation as data

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 32, 32, 1))
    masks = rng.integers(0, 4, (30, 32, 32))
    write_folder(tmp_path / "index", images, masks)
    loaded = data.load(f"folder:{tmp_path / 'index'}")
    assert loaded.class_names == ["background", "tshirt", "trouser", "pullover"] and sum(loaded.sizes.values()) == 30
    got = {tuple(e["image"][:2, 0, 0]): e["mask"][..., 0] for s in ("train", "validation", "test")
           for e in getattr(loaded, s).as_numpy_iterator()}  # fmt: skip
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(got[tuple(image[:2, 0, 0])], mask)
    # the same masks as RGB in VOC's colour palette read back as the same ids
    write_folder(tmp_path / "rgb", images, masks, names=None)
    for i, mask in enumerate(masks):
        Image.fromarray(data.voc_palette()[mask]).save(tmp_path / "rgb" / "masks" / f"{i:03d}.png")
    rgb = data.load(f"folder:{tmp_path / 'rgb'}", image_size=64)
    assert rgb.class_names == ["0", "1", "2", "3"] and rgb.image_shape == (64, 64, 1)
    _, test_masks = rgb.arrays("test")
    assert test_masks.shape[1:] == (64, 64) and set(np.unique(test_masks)) <= {0, 1, 2, 3}


def test_folder_loader_names_the_bad_mask(tmp_path):
    from PIL import Image

    from toolkit.data import segmentation as data

    rng = np.random.default_rng(0)
    images, masks = rng.integers(0, 255, (40, 32, 32, 1)), rng.integers(0, 4, (40, 32, 32))
    write_folder(tmp_path, images, masks)
    Image.fromarray(np.full((16, 16), 1, np.uint8)).save(tmp_path / "masks" / "003.png")
    with pytest.raises(ToolkitError, match=r"003\.png: mask is 16x16 but its image is 32x32"):
        data.load(f"folder:{tmp_path}")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "masks" / "003.png")
    with pytest.raises(ToolkitError, match=r"003\.png: mask value 7 is outside the classes 0\.\.3"):
        data.load(f"folder:{tmp_path}")
    (tmp_path / "masks" / "003.png").unlink()
    with pytest.raises(ToolkitError, match=r"mask file .*003\.png does not exist"):
        data.load(f"folder:{tmp_path}")
    with pytest.raises(ToolkitError, match=r"mask 2: mask value 9 is outside"):
        bad = masks.copy()
        bad[2, 0, 0] = 9
        data.from_arrays(images, bad, ["a", "b", "c", "d"])
    with pytest.raises(ToolkitError, match="masks .* must match"):
        data.from_arrays(images, masks[:, :16], ["a", "b", "c", "d"])


def test_scene_batches_carry_class_masks_and_flip_them_with_the_image():
    from toolkit.data import segmentation as data

    images, masks = tiny_scene_masks(8, seed=1)
    loaded = data.from_arrays(images, masks, ["background", "a", "b", "c"], 0.25, 0.25)
    for x, y in data.batches(loaded.train, 4, augment="flip").take(1):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == np.float32 and y.dtype == np.int32 and y.shape == x.shape[:3]
        # whichever way each pair was flipped, the mask still covers the item: bright pixels lie on classes
        assert all(np.mean(yi[xi[..., 0] > 100] > 0) > 0.95 for xi, yi in zip(x, y) if (xi > 100).any())


@pytest.mark.slow
def test_recipe_from_the_command_line(tmp_path):
    """`toolkit run segmentation` on a small image folder with index masks.

    Widths 16+: with an 8-channel stem this recipe died in model.fit (SIGSEGV / glibc malloc abort, 2 of 2
    runs) under TensorFlow 2.21's oneDNN kernels, and ran with TF_ENABLE_ONEDNN_OPTS=0 (2 of 2)."""
    images, masks = tiny_scene_masks(60, seed=1)
    write_folder(tmp_path / "data", images, masks)
    run, report = run_pyramid_recipe(
        "segmentation", tmp_path / "runs", "--data", f"folder:{tmp_path / 'data'}",
        "--epochs", "2", "--batch-size", "16",
    )  # fmt: skip
    assert report["metric"] == "miou" and {"keras", "tflite_fp32", "tflite_int8"} <= set(report["formats"])
    assert report["formats"]["tflite_fp32"]["miou"] == pytest.approx(report["formats"]["keras"]["miou"], abs=1e-3)
    assert set(report["per_class_iou"]) <= {"background", "tshirt", "trouser", "pullover"}
    for name in ("model.keras", "model_fp32.tflite", "model_int8.tflite", "segmentation.png", "labels.txt"):
        assert (run / name).is_file(), name
    done = cli_fails("run", "segmentation", "--data", f"folder:{tmp_path / 'missing'}")
    assert done.returncode == 2 and "missing does not exist" in done.stderr

    # `toolkit predict segmentation` on a user's image of another size: a class-id PNG at that size.
    from PIL import Image

    from toolkit.data.segmentation import read_mask

    photo = tmp_path / "photo.png"
    Image.open(tmp_path / "data" / "images" / "000.png").resize((96, 80)).save(photo)
    found = {}
    for fmt in ("keras", "tflite_fp32"):
        command = run_cli if fmt == "keras" else cli_in_process  # the .keras file also loads in a fresh process
        done = command("predict", "segmentation", str(photo), "--run", str(run), "--format", fmt)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [line.split("\t") for line in done.stdout.strip().splitlines()]
        assert rows[-1] == [str(photo), f"wrote {tmp_path / 'photo.segmentation.png'}"]
        found[fmt] = {name: float(fraction) for _, name, fraction in rows[:-1]}
        assert set(found[fmt]) <= {"background", "tshirt", "trouser", "pullover"}
        assert sum(found[fmt].values()) == pytest.approx(1, abs=2e-3)
        mask = read_mask(str(tmp_path / "photo.segmentation.png"), (96, 80))
        assert mask.shape == (80, 96) and mask.max() <= 3
    assert found["tflite_fp32"] == pytest.approx(found["keras"], abs=0.01)
