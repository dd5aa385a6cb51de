"""The command line: one clear line and a non-zero exit for bad input, never a traceback."""

import pytest

from tests.conftest import cli_fails, run_cli


def _fails_with(done, *phrases):
    """A failed `toolkit` command (run_cli's subprocess, or cli_fails in this interpreter): a non-zero
    exit, and stderr is one line starting "error: " holding every phrase."""
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_unknown_command_and_recipe_list_the_valid_ones():
    _fails_with(run_cli("trian"), "unknown command 'trian'", "backbones", "run")
    _fails_with(cli_fails("run", "clasification"), "unknown recipe 'clasification'", "classification")
    _fails_with(cli_fails("run"), "needs a recipe")


def test_bad_recipe_options_are_named(tmp_path):
    _fails_with(run_cli("run", "classification", "--epochs", "-3"), "--epochs", "positive integer")
    _fails_with(
        cli_fails("run", "classification", "--backbone", "resnet9000"), "unknown backbone 'resnet9000'", "edgenet"
    )
    _fails_with(
        cli_fails("run", "classification", "--data", f"fashion_mnist:{tmp_path}", "--output", str(tmp_path / "out")),
        "not found", "apt-get install dataset-fashion-mnist",
    )  # fmt: skip
    _fails_with(cli_fails("run", "classification", "--backbone-option", "width"), "KEY=VALUE")


def test_backbones_lists_every_backbone_with_counts():
    done = run_cli("backbones", "--input-size", "64", "--sequence-length", "16")
    assert done.returncode == 0, done.stderr
    names = ("edgenet", "edgenet_lite", "resnet", "mobilenetv3_small", "hub_resnet", "birnn", "causal_rnn",
             "transformer")  # fmt: skip
    for name in names + ("gcn", "graphsage"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(name + " "))
        params, gflops = int(line.split()[3].replace(",", "")), float(line.split()[4])
        assert params > 1_000 and gflops > 0, line


@pytest.mark.parametrize("fmt", ["keras", "tflite_fp32"])
def test_predict_without_a_run_is_a_clear_error(tmp_path, fmt):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    _fails_with(cli_fails("predict", "classification", str(image), "--run", str(tmp_path), "--format", fmt), "labels.txt")


def test_every_single_pass_task_has_a_predictor():
    from toolkit import predict, tasks

    assert set(predict.PREDICTORS) == {n for n in tasks.names() if not tasks.get(n).is_decoder}


def test_predict_loads_the_run_once_for_every_chunk_of_inputs(tmp_path, monkeypatch, capsys):
    """Long input lists are predicted in chunks with a progress line each; the model loads once."""
    import dataclasses

    from toolkit import cli, predict

    loads = []

    def load(run_dir, fmt, allow_unsafe=False):
        loads.append((run_dir, fmt))
        return lambda files: [(f, "a", 0.5) for f in files]

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"")
    fake = dataclasses.replace(predict.PREDICTORS["classification"], load=load)
    monkeypatch.setitem(predict.PREDICTORS, "classification", fake)
    monkeypatch.setattr(cli, "PROGRESS_CHUNK", 2)
    assert cli.cmd_predict(["classification", str(tmp_path), "--run", "r", "--format", "keras"]) == 0
    out, err = capsys.readouterr()
    assert loads == [("r", "keras")]
    assert len(out.splitlines()) == 5 and err.splitlines() == ["predicted 2/5", "predicted 4/5", "predicted 5/5"]

