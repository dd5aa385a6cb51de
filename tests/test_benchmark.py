"""`toolkit benchmark`: every format of a finished run, scored and timed; floors fail the command."""

import json

import pytest

from tests.conftest import cli_fails, cli_in_process, run_cli
from tests.test_cli import _fails_with


@pytest.fixture(scope="module")
def karate_run(tmp_path_factory):
    from recipes import node_classification

    out = tmp_path_factory.mktemp("bench")
    node_classification.main(["--data", "karate", "--labels-per-class", "3", "--epochs", "60", "--output", str(out)])
    return out / "node_classification"


@pytest.mark.slow
def test_benchmark_scores_every_format_and_writes_the_model_card(karate_run):
    formats = "saved_model,tflite_fp32,tflite_fp16,tflite_dynamic,tflite_int8,tflite_int8io,tflite_int16x8,onnx"
    done = run_cli("benchmark", str(karate_run), "--formats", formats, "--threads", "1,2", "--floor", "50")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((karate_run / "benchmark.json").read_text())
    rows = result["formats"]
    assert set(formats.split(",")) | {"keras"} == set(rows)
    for name in formats.split(","):
        assert rows[name]["status"] == "passed", (name, rows[name]["status"])
        assert abs(rows[name]["drop_points"]) <= 50
    assert rows["tflite_fp32"]["max_abs_diff"] <= 1e-4
    assert rows["onnx"]["max_abs_diff"] <= 1e-4 and set(rows["onnx"]["latency_ms_by_threads"]) == {"1", "2"}
    assert rows["tflite_int16x8"]["max_abs_diff"] <= 0.05  # int16 activations: near Keras on the graph model
    assert set(rows["tflite_fp32"]["latency_ms_by_threads"]) == {"1", "2"}
    io = rows["tflite_int8io"]["io_quantization"]  # what a device needs to feed int8 inputs
    assert io["inputs"] and all(q["scale"] > 0 for q in io["inputs"].values())
    assert (karate_run / "model_int8io.tflite").stat().st_size < (karate_run / "model_fp32.tflite").stat().st_size
    assert json.loads((karate_run / "report.json").read_text())["formats"]["tflite_int8io"]["io_quantization"] == io
    card = (karate_run / "report.md").read_text()
    assert "## Benchmark: every export format" in card and "tflite_int8io" in card


@pytest.mark.slow
def test_a_floor_fails_the_command_and_bad_arguments_are_named(karate_run, tmp_path):
    done = run_cli("benchmark", str(karate_run), "--formats", "tflite_fp32", "--threads", "1", "--floor", "-1")
    assert done.returncode == 1
    assert "did not pass" in done.stderr and "tflite_fp32" in done.stderr
    status = json.loads((karate_run / "benchmark.json").read_text())["formats"]["tflite_fp32"]["status"]
    assert status.startswith("exported but failed validation")
    _fails_with(cli_fails("benchmark", str(karate_run), "--formats", "onnx_int4"), "unknown format 'onnx_int4'")
    _fails_with(cli_fails("benchmark", str(karate_run), "--threads", "0"), "--threads")
    _fails_with(cli_fails("benchmark", str(tmp_path)), "report.json not found")
    _fails_with(cli_fails("benchmark"), "needs a run folder")


@pytest.mark.slow
def test_benchmark_all_gives_each_run_its_own_process(karate_run, tmp_path):
    """Several runs: each is benchmarked in a child process (the converter's leak stays per run); the
    parent prints each table, writes the Pareto plot and exits 1 when one run's format fails."""
    import shutil

    for name in ("a", "b"):
        shutil.copytree(karate_run, tmp_path / name)
    done = run_cli("benchmark", "--all", "--output", str(tmp_path), "--formats", "tflite_fp32", "--threads", "1",
                   "--floor", "-1")  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    for name in ("a", "b"):
        assert f"{tmp_path / name}\n| format |" in done.stdout and f"{tmp_path / name}:tflite_fp32" in done.stderr
        status = json.loads((tmp_path / name / "benchmark.json").read_text())["formats"]["tflite_fp32"]["status"]
        assert status.startswith("exported but failed validation")
    assert (tmp_path / "pareto.png").is_file()


@pytest.mark.slow
def test_predict_classifies_the_runs_own_graph_nodes(karate_run):
    done = cli_in_process("predict", "node_classification", "0", "33", "--run", str(karate_run), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    found = [json.loads(line) for line in done.stdout.splitlines()]
    classes = set((karate_run / "labels.txt").read_text().splitlines())
    assert [r["input"] for r in found] == ["0", "33"]
    for record in found:
        assert record["predictions"][0]["label"] in classes and 0.5 <= record["predictions"][0]["probability"] <= 1
    every = cli_in_process("predict", "node_classification", "--run", str(karate_run))
    assert every.returncode == 0 and len(every.stdout.splitlines()) == 34
    _fails_with(cli_fails("predict", "node_classification", "34", "--run", str(karate_run)), "nodes 0..33")
