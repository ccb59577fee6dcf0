"""INT8 static quantization of an exported detector (ONNX Runtime QDQ), calibrated and checked on synthetic stalls.

    python -m fbvision.export.quantize --model fbvision/data/models/horse-demo-yolo11n-320.onnx
    python -m fbvision.export.quantize --model m.onnx --output m.int8.onnx --calibration 64 --eval-seeds 300

What it does (ONNX Runtime's own tools, nothing hand-written: ``onnxruntime.quantization.quant_pre_process`` and
``quantize_static``):

* calibration: ``--calibration`` letterboxed synthetic stall frames (seeds from ``CALIBRATION_SEED_START``, apart
  from the evaluation seeds), MinMax ranges;
* QDQ format, weights INT8 per channel, activations UINT8, on the Conv and MatMul nodes (the rest - the head's
  concatenations, the DFL softmax, the box decoding - stays FP32: it is cheap and carries the coordinates);
* the check: mAP50 of the FP32 and INT8 models on the same unseen synthetic scenes (``EVAL_SEED_START``, the
  model card's set) and the CPU time of each on those frames, side by side in one run; written beside the INT8
  model as ``<output stem>.quant.json`` (``fbvision.inference.engines.variants`` reads it);
* an INT8 model that loses more than ``--max-map-loss`` (1 point mAP50) is written, but marked as failed
  (``passed: false``) and exits 1: the engine never picks it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from fbvision.inference.engines.variants import int8_variant as int8_path
from fbvision.inference.engines.variants import (
    quant_record as sidecar,  # <stem>.quant.json: not the model's sidecar
)

logger = logging.getLogger(__name__)

CALIBRATION_SEED_START = 700_000  # apart from the training, validation and evaluation seeds (fbvision.synth.dataset)
MAX_MAP_LOSS = 0.01  # 1 point of mAP50


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def calibration_tensors(n: int, size: tuple[int, int], seed: int = CALIBRATION_SEED_START):
    """``n`` [1, 3, H, W] float tensors of letterboxed synthetic stall frames (day and night)."""
    from fbvision.core.letterbox import letterbox
    from fbvision.core.tensor import to_tensor
    from fbvision.synth.dataset import samples

    out = []
    for sample in samples(range(seed, seed + n), frames_per_seed=1):
        out.append(to_tensor([letterbox(sample.image, size)[0]]))
        if len(out) >= n:
            break
    return out


def quantize(model: Path, output: Path, *, calibration: int = 64) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fbvision.core.modelinfo import load_model_info

    info = load_model_info(model)
    tensors = calibration_tensors(calibration, tuple(info.input_size))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(tensors)

        def get_next(self):
            tensor = next(self._it, None)
            return None if tensor is None else {info.input_name: tensor}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MatMul"])
    return output


def check(fp32: Path, int8: Path, *, eval_seeds: int = 300, max_map_loss: float = MAX_MAP_LOSS,
          threads: int = 1) -> dict:
    """Both models on the same unseen scenes, one after the other in this run: mAP50 and inference seconds."""
    from fbvision.synth.dataset import EVAL_SEED_START
    from fbvision.synth.evaluate import evaluate_detector

    seeds = range(EVAL_SEED_START, EVAL_SEED_START + eval_seeds)
    ref = evaluate_detector(fp32, seeds, threads=threads)
    got = evaluate_detector(int8, seeds, threads=threads)
    loss = round(float(ref["map50"]) - float(got["map50"]), 4)
    return {
        "format": "onnxruntime QDQ, weights int8 per channel, activations uint8 (Conv, MatMul), MinMax calibration",
        "source": fp32.name, "source_sha256": sha256(fp32), "sha256": sha256(int8),
        "eval_seeds": [seeds.start, seeds.stop - 1], "images": got["images"],
        "map50_fp32": ref["map50"], "map50_int8": got["map50"], "map50_loss": loss,
        "max_map_loss": max_map_loss, "passed": bool(loss <= max_map_loss),
        "inference_s_fp32": ref["inference_s"], "inference_s_int8": got["inference_s"],
        "speedup": round(ref["inference_s"] / got["inference_s"], 3) if got["inference_s"] else None,
        "threads": threads, "per_look_int8": got["per_look"], "per_look_fp32": ref["per_look"],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the FP32 ONNX model (dynamic batch)")
    parser.add_argument("--output", type=Path, help="default: <model stem>.int8.onnx beside it")
    parser.add_argument("--calibration", type=int, default=64, help="calibration frames (default 64)")
    parser.add_argument("--eval-seeds", type=int, default=300, help="unseen scenes for the mAP check (default 300)")
    parser.add_argument("--max-map-loss", type=float, default=MAX_MAP_LOSS, help="mAP50 the INT8 model may lose")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = args.output or int8_path(args.model)
    started = time.perf_counter()
    quantize(args.model, output, calibration=args.calibration)
    result = check(args.model, output, eval_seeds=args.eval_seeds, max_map_loss=args.max_map_loss)
    result["calibration_frames"] = args.calibration
    sidecar(output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{output}: mAP50 {result['map50_int8']} vs FP32 {result['map50_fp32']} (loss {result['map50_loss']}, "
          f"at most {args.max_map_loss}), {result['speedup']}x faster on {result['images']} unseen frames "
          f"-> {'PASSED' if result['passed'] else 'FAILED: the engine will not pick it'} "
          f"({time.perf_counter() - started:.0f} s; {sidecar(output)})")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
