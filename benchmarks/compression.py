"""The compression pipeline's targets, measured: bytes, batch-1 CPU latency on one thread, and test accuracy.

    python benchmarks/compression.py                  # prints a table, writes benchmarks/results/compression.json
    python benchmarks/compression.py --rounds 3       # fewer rounds: quicker, noisier

Compares the fp32 teacher under ONNX Runtime with the shipped pipeline model (``teacher_fmnist_pruned``: the teacher
channel-pruned and distilled back, see ``scripts/build_compressed.py``) deployed the three ways of the chapter "The
compression pipeline": int8 by ONNX Runtime, int8 in the linear layers only, and float. Latency: each round times
every model (median of ``--repeats`` batch-1 runs each, one thread, the order alternating), and the table reports
the median over rounds, so drift on a busy machine affects all alike. Exits with status 1 unless one deployment
meets all three targets:

* at least 20x fewer bytes on disk than the fp32 teacher's file;
* at least 2x lower batch-1 latency on one thread than the fp32 teacher under ONNX Runtime;
* test accuracy within 0.5 points of the teacher's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

import kdtutor as kd
from kdtutor import compression as kc
from kdtutor.evaluation import latency
from kdtutor.models import registry

PIPELINE = "teacher_fmnist_pruned"
TARGETS = {"bytes": 20.0, "latency": 2.0, "accuracy_points": 0.5}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timing rounds (default 9)")
    parser.add_argument("--repeats", type=int, default=300, help="timed batch-1 runs per model per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compression.json")
    args = parser.parse_args()

    train_full, test = kd.load_fashion_mnist()
    train, _ = kd.book_split(train_full)
    teacher, small = kd.pretrained_teacher(), kd.pretrained(PIPELINE)
    work = Path(tempfile.mkdtemp(prefix="kdtutor-bench-"))
    example = test.tensors[0][:2]
    calibration = train.tensors[0][torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:512]]
    small_fp32 = kc.export_onnx(small, work / "small.onnx", example)
    files = {
        "teacher, fp32": kc.export_onnx(teacher, work / "teacher.onnx", example),
        "pipeline, int8": kc.quantize_static(small_fp32, work / "small-int8.onnx", calibration),
        "pipeline, int8 linear layers": kc.quantize_static(small_fp32, work / "small-int8-linear.onnx", calibration,
                                                           only=("Gemm", "MatMul")),
        "pipeline, fp32": small_fp32,
    }
    runs = {name: kc.OnnxModel(path, threads=1) for name, path in files.items()}

    one = test.tensors[0][:1]
    times = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:  # alternate the order: drift hits all alike
            times[name].append(latency(runs[name], one, repeats=args.repeats, warmup=20))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    acc = {name: kd.evaluate(model, test) for name, model in runs.items()}
    teacher_file = registry.record()["size_bytes"]

    print(f"teacher's file: {teacher_file:,} bytes; ONNX Runtime, one image, one thread, median of {args.rounds} "
          f"rounds of {args.repeats} runs")
    results, ok = {}, False
    for name in runs:
        result = {"bytes": kc.file_bytes(files[name]), "ms_1": ms[name], "test_acc": acc[name],
                  "bytes_ratio": teacher_file / kc.file_bytes(files[name]),
                  "latency_ratio": ms["teacher, fp32"] / ms[name],
                  "accuracy_gap_points": 100 * (acc["teacher, fp32"] - acc[name])}
        result["met"] = {"bytes": result["bytes_ratio"] >= TARGETS["bytes"],
                         "latency": result["latency_ratio"] >= TARGETS["latency"],
                         "accuracy_points": result["accuracy_gap_points"] <= TARGETS["accuracy_points"]}
        results[name] = result
        marks = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["met"].items())
        print(f"{name:>29}: {result['bytes']:>9,} bytes ({result['bytes_ratio']:4.1f}x), {ms[name]:.4f} ms "
              f"({result['latency_ratio']:.2f}x), test {acc[name]:.2%} ({-result['accuracy_gap_points']:+.2f})"
              + ("" if name.startswith("teacher") else f"  [{marks}]"))
        ok |= not name.startswith("teacher") and all(result["met"].values())
    print(f"targets: >= {TARGETS['bytes']:.0f}x fewer bytes, >= {TARGETS['latency']:.0f}x lower latency, <= "
          f"{TARGETS['accuracy_points']} points below the teacher — "
          + ("met by at least one deployment" if ok else "MISSED: no deployment meets all three"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"teacher_file_bytes": teacher_file, "results": results, "all_met": ok,
                                    "rounds": args.rounds, "repeats": args.repeats,
                                    "machine": f"{torch.get_num_threads()} threads, {platform.machine()}",
                                    "torch": torch.__version__}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
