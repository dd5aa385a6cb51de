"""LiteRT int8 vs fp32 batch-1 latency and size as the input grows, per backbone (classification head).

    python benchmarks/int8_latency.py [--sizes 28,96,224] [--backbones resnet,edgenet,...] [--threads 2]

At 28x28 the default model is ~2.5 MFLOPs and its latency is mostly per-op interpreter overhead,
which int8 does not shrink; this measures where int8's arithmetic advantage starts to show.
Weights are untrained and calibration uses random images: latency and size do not depend on them.
Baseline: the LiteRT fp32 file of the same model, in the same run.
"""

import argparse
import os
import shlex
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.results import update_section  # noqa: E402
from toolkit import backbones  # noqa: E402
from toolkit.export import litert  # noqa: E402
from toolkit.tasks import classification  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="28,96,224")
    p.add_argument("--backbones", default="resnet,edgenet,edgenet_lite,mobilenetv3_small")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for name in args.backbones.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            if size < backbones.entry(name).min_size:  # keras.applications' MobileNetV3 takes 32 px and up
                continue
            channels = 1 if size == 28 else 3
            model = classification.build(name, (size, size, channels), 10)
            calibration = rng.integers(0, 256, (32, size, size, channels)).astype(np.float32)
            with tempfile.TemporaryDirectory() as tmp:
                litert.export_saved_model(model, os.path.join(tmp, "sm"))
                result = {}
                for quantization in ("fp32", "int8"):
                    path = os.path.join(tmp, f"{quantization}.tflite")
                    with open(path, "wb") as f:
                        f.write(litert.convert(os.path.join(tmp, "sm"), quantization, calibration))
                    runtime = litert.LiteRTModel(path, threads=args.threads)
                    result[quantization] = (runtime.latency_ms(calibration[:1])[0], os.path.getsize(path))
            fp32, int8 = result["fp32"], result["int8"]
            rows.append(
                f"| {name} | {size}x{size}x{channels} | {backbones.count_flops(model) / 1e6:.1f} | "
                f"{fp32[0]:.3f} | {int8[0]:.3f} | {int8[0] / fp32[0]:.2f}x | {int8[1] / fp32[1]:.2f}x |"
            )
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            "## LiteRT int8 vs fp32 as the input grows (issues 2, 19: latency and size targets)",
            "",
            f"Command: `{shlex.join(['python', 'benchmarks/int8_latency.py', *argv])}`; "
            f"batch 1, XNNPACK, {args.threads} threads, median of >= 50 invokes after warm-up.",
            "",
            "| backbone | input | MFLOPs | fp32 ms | int8 ms | int8/fp32 latency | int8/fp32 size |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    update_section("int8_latency", body)


if __name__ == "__main__":
    main(sys.argv[1:])
