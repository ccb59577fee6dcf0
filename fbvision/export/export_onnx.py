#!/usr/bin/env python3
"""Export a YOLO11 detector to ONNX with a dynamic batch axis, write its sidecar metadata, verify it.

    python export/export_onnx.py --weights yolo11n.yaml               # offline: architecture, random weights
    python export/export_onnx.py --weights yolo11n.pt                 # COCO weights, where you have them
    python export/export_onnx.py --weights best.pt --imgsz 320 --max-batch 32 --output models/x.onnx
    python export/export_onnx.py --weights yolo11n.pt --half          # FP16 weights (I/O stays float32)

The graph keeps the standard Ultralytics head, ``output0`` = [B, 4 + nc, N] (cx, cy, w, h in input pixels, class
scores after sigmoid), no NMS. The batch axis is dynamic (1..--max-batch); height and width are fixed to
--imgsz (pass --dynamic-hw to keep them dynamic as Ultralytics does).

Verification: the ONNX model runs in ONNX Runtime (CPU) at batch 1, 7 and --max-batch on letterboxed synthetic
stall frames, and its output is compared with the Ultralytics PyTorch model on the same tensors. Tolerances
(absolute): FP32 - boxes 0.05 px + 1e-4 x value, scores 1e-3; FP16 - boxes 1.0 px + 2e-3 x value, scores 2e-2.
A failed comparison exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no update checks, no downloads

import numpy as np  # noqa: E402

logger = logging.getLogger("export_onnx")

SIDECAR_FORMAT = "fbvision-model/1"
TOLERANCES = {
    # boxes: |onnx - torch| <= atol + rtol * |torch| (pixels); scores: absolute
    "fp32": {"box_atol_px": 0.05, "box_rtol": 1e-4, "score_atol": 1e-3},
    "fp16": {"box_atol_px": 1.0, "box_rtol": 2e-3, "score_atol": 2e-2},
}


class ExportError(RuntimeError):
    """Export or verification failed; the message says which step."""


@dataclass
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    metadata: dict[str, Any]
    verification: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(row["ok"] for row in self.verification)


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Log the start, the duration and the failure of one export step (Ultralytics' exporter style)."""
    logger.info("%s ...", name)
    started = time.perf_counter()
    try:
        yield
    except Exception:
        logger.error("%s failed after %.1f s", name, time.perf_counter() - started)
        raise
    logger.info("%s done in %.1f s", name, time.perf_counter() - started)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_file(weights: str) -> tuple[Path | None, str]:
    """The file the weights (or the architecture) come from, and a description for the model card."""
    path = Path(weights)
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path, f"{path.name} (architecture only: random weights)"
        import re

        from ultralytics.utils.checks import check_yaml

        # Ultralytics ships one YAML per family (yolo11.yaml) with the scale in the name (yolo11n -> n).
        unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path.name)
        file = None
        for candidate in (path.name, unified):
            try:
                found = check_yaml(candidate, hard=False)
            except Exception:  # noqa: BLE001 - resolution only feeds the checksum
                found = None
            if found and Path(found).is_file():
                file = Path(found)
                break
        return file, f"{path.name} (architecture only: random weights; config {file.name if file else '?'})"
    if not path.is_file():
        raise ExportError(
            f"weights not found: {weights} (this machine is offline, nothing is downloaded; "
            "pass a local .pt or an architecture such as yolo11n.yaml)"
        )
    return path, path.name


def _coco_names() -> dict[int, str]:
    from ultralytics.utils import ROOT, YAML

    return dict(YAML.load(ROOT / "cfg" / "datasets" / "coco.yaml")["names"])


def _names_from(option: str | None, model_names: dict[int, str], nc: int) -> dict[int, str]:
    if option is None:
        # An architecture-only model has placeholder names '0'..'79'; yolo11n.yaml is the COCO layout.
        if all(str(name) == str(k) for k, name in model_names.items()) and nc == 80:
            return _coco_names()
        return {int(k): str(v) for k, v in model_names.items()}
    if option == "coco":
        names = _coco_names()
    else:
        import yaml

        document = yaml.safe_load(Path(option).read_text(encoding="utf-8"))
        raw = document.get("names", document) if isinstance(document, dict) else document
        names = dict(enumerate(raw)) if isinstance(raw, list) else {int(k): str(v) for k, v in raw.items()}
    if len(names) != nc:
        raise ExportError(f"--names gives {len(names)} classes but the model has {nc}")
    return names


def verification_batch(n: int, imgsz: int, seed: int = 7) -> np.ndarray:
    """``n`` letterboxed synthetic stall frames as a float32 [n, 3, imgsz, imgsz] RGB tensor in 0..1."""
    from fbvision.core.letterbox import letterbox
    from fbvision.core.tensor import to_tensor
    from fbvision.synth.dataset import samples

    frames = []
    for sample in samples(range(seed, seed + n), frames_per_seed=1):
        frames.append(letterbox(sample.image, (imgsz, imgsz))[0])
        if len(frames) == n:
            break
    return to_tensor(frames)


def _fix_spatial_dims(onnx_path: Path, imgsz: int) -> None:
    """Keep only the batch axis dynamic: TensorRT/ORT plan better with a fixed input size."""
    import onnx

    model = onnx.load(str(onnx_path))
    image = model.graph.input[0].type.tensor_type.shape
    for index in (2, 3):
        image.dim[index].Clear()
        image.dim[index].dim_value = imgsz
    output = model.graph.output[0].type.tensor_type.shape
    if len(output.dim) == 3:
        # One anchor per cell of the three YOLO11 detection strides.
        anchors = sum((imgsz // s) ** 2 for s in (8, 16, 32))
        output.dim[2].Clear()
        output.dim[2].dim_value = anchors
    _topological_sort(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def _topological_sort(graph: Any) -> None:
    """Reorder nodes so each comes after its producers (the FP16 converter appends its input Casts at the end,
    which ONNX Runtime tolerates but the ONNX checker and TensorRT's parser do not)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise ExportError(f"graph has a cycle or missing inputs near node {remaining[0].name!r}")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


def _compare(onnx_out: np.ndarray, torch_out: np.ndarray, tolerance: dict[str, float]) -> dict[str, Any]:
    boxes_o, boxes_t = onnx_out[:, :4].astype(np.float64), torch_out[:, :4].astype(np.float64)
    scores_o, scores_t = onnx_out[:, 4:].astype(np.float64), torch_out[:, 4:].astype(np.float64)
    box_err = np.abs(boxes_o - boxes_t)
    box_limit = tolerance["box_atol_px"] + tolerance["box_rtol"] * np.abs(boxes_t)
    score_err = np.abs(scores_o - scores_t)
    return {
        "shape": list(onnx_out.shape),
        "max_box_diff_px": float(box_err.max()),
        "max_score_diff": float(score_err.max()),
        "ok": bool(
            onnx_out.shape == torch_out.shape
            and (box_err <= box_limit).all()
            and (score_err <= tolerance["score_atol"]).all()
        ),
    }


def verify(
    onnx_path: Path, torch_model: Any, imgsz: int, batch_sizes: list[int], precision: str
) -> list[dict]:
    """Run ONNX Runtime and PyTorch on the same inputs at each batch size; one result row per batch size."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_meta = session.get_inputs()[0]
    input_dtype = np.float16 if input_meta.type == "tensor(float16)" else np.float32
    tolerance = TOLERANCES[precision]
    inputs = verification_batch(max(batch_sizes), imgsz)
    rows = []
    for batch in batch_sizes:
        images = inputs[:batch]
        started = time.perf_counter()
        onnx_out = session.run(None, {input_meta.name: images.astype(input_dtype)})[0].astype(np.float32)
        ort_s = time.perf_counter() - started
        started = time.perf_counter()
        with torch.inference_mode():
            tensor = torch.from_numpy(images)
            if precision == "fp16" and next(torch_model.parameters()).dtype == torch.float16:
                tensor = tensor.half()
            result = torch_model(tensor)
            torch_out = (result[0] if isinstance(result, (list, tuple)) else result).float().numpy()
        torch_s = time.perf_counter() - started
        row = {
            "batch": batch,
            **_compare(onnx_out, torch_out, tolerance),
            "ort_s": round(ort_s, 3),
            "torch_s": round(torch_s, 3),
        }
        logger.info(
            "verify batch %2d: output %s, max |box diff| %.2e px, max |score diff| %.2e -> %s (ORT %.2f s, torch %.2f s)",
            batch,
            row["shape"],
            row["max_box_diff_px"],
            row["max_score_diff"],
            "OK" if row["ok"] else "MISMATCH",
            ort_s,
            torch_s,
        )
        rows.append(row)
    return rows


def export_model(
    weights: str | Path,
    output: str | Path | None = None,
    *,
    imgsz: int = 640,
    max_batch: int = 32,
    half: bool = False,
    opset: int | None = None,
    simplify: bool = True,
    names: str | None = None,
    dynamic_hw: bool = False,
    verify_batches: list[int] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> ExportResult:
    """Export ``weights`` (a .pt or an architecture .yaml) to ``output`` plus ``output.json``; verify it."""
    import onnx
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO
    from ultralytics import __version__ as ultralytics_version

    weights = str(weights)
    if max_batch < 1:
        raise ExportError("--max-batch must be >= 1")
    if imgsz % 32:
        raise ExportError(f"--imgsz must be a multiple of 32 (the model's largest stride), got {imgsz}")
    source, source_desc = _source_file(weights)
    precision = "fp16" if half else "fp32"
    if output is None:
        output = Path("runs") / "export" / f"{Path(weights).stem}-{imgsz}{'-fp16' if half else ''}.onnx"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    with step(f"load {weights}"):
        yolo = YOLO(weights)
        torch_model = yolo.model
        nc = len(torch_model.names)
        class_names = _names_from(names, torch_model.names, nc)
        torch_model.names = class_names
        logger.info(
            "model: %s, %d classes, %.2f M parameters",
            type(torch_model).__name__,
            nc,
            sum(p.numel() for p in torch_model.parameters()) / 1e6,
        )

    source_sha = None
    if source is not None:
        with step(f"sha256 {source.name}"):
            source_sha = sha256_file(source)

    with (
        tempfile.TemporaryDirectory(prefix="fbv-export-") as scratch,
        step(f"ultralytics export (onnx, {precision})"),
    ):
        # Ultralytics writes next to the weights (or into the cwd for a .yaml): export from a scratch copy.
        scratch = Path(scratch)
        work_weights = weights
        if source is not None and Path(weights).suffix == ".pt":
            work_weights = str(scratch / Path(weights).name)
            shutil.copy2(weights, work_weights)
            yolo_export = YOLO(work_weights)
            yolo_export.model.names = class_names
        else:
            yolo_export = yolo
        previous_cwd = Path.cwd()
        os.chdir(scratch)
        try:
            exported = yolo_export.export(
                format="onnx",
                imgsz=imgsz,
                dynamic=True,
                batch=max_batch,
                simplify=simplify,
                opset=opset,
                quantize=16 if half else None,
                nms=False,
                device="cpu",
                verbose=False,
            )
        finally:
            os.chdir(previous_cwd)
        exported = Path(exported)
        if not exported.is_absolute():
            exported = scratch / exported
        shutil.move(str(exported), output)
    logger.info("exported %s (%s)", output, _mb(output))

    if not dynamic_hw:
        with step(f"fix input size to {imgsz}x{imgsz} (batch stays dynamic)"):
            _fix_spatial_dims(output, imgsz)

    with step("inspect graph"):
        graph = onnx.load(str(output))
        image_input, head = graph.graph.input[0], graph.graph.output[0]

        def dims(value) -> list:
            return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

        input_dims, output_dims = dims(image_input), dims(head)
        opset_used = max(
            (entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")), default=0
        )
        ultralytics_props = {p.key: p.value for p in graph.metadata_props}
        del graph
        logger.info(
            "input %s %s, output %s %s, opset %d",
            image_input.name,
            input_dims,
            head.name,
            output_dims,
            opset_used,
        )
        if not isinstance(input_dims[0], str):
            raise ExportError(f"exported batch axis is not dynamic: {input_dims}")

    # The PyTorch reference, fused like the exported graph so the comparison is like for like.
    reference = torch_model.float().eval()
    if precision == "fp16" and torch.cuda.is_available():
        reference = reference.half()
    rows: list[dict[str, Any]] = []
    batches = sorted({b for b in (verify_batches or [1, 7, max_batch]) if 1 <= b <= max_batch})
    if batches:
        with step(f"verify ONNX Runtime vs PyTorch at batch {batches}"):
            rows = verify(output, reference, imgsz, batches, precision)

    metadata: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "model_file": output.name,
        "model_sha256": sha256_file(output),
        "task": "detect",
        "class_names": [class_names[k] for k in sorted(class_names)],
        "input_name": image_input.name,
        "input_size": [imgsz, imgsz],
        "input_layout": "NCHW, RGB, 0..1, letterboxed with grey 114",
        "input_dtype": "float16"
        if image_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        else "float32",
        "dynamic_batch": True,
        "min_batch": 1,
        "max_batch": max_batch,
        "output_name": head.name,
        "output_shape_desc": f"[batch, {4 + nc}, {output_dims[2]}]: cx, cy, w, h (input pixels), "
        f"{nc} class scores after sigmoid; no NMS",
        "fp16": half,
        "source_weights": source_desc,
        "source_sha256": source_sha,
        "export": {
            "tool": "export/export_onnx.py",
            "ultralytics": ultralytics_version,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": opset_used,
            "simplify": simplify,
            "dynamic_hw": dynamic_hw,
            "half": half,
            "nms": False,
            "python": platform.python_version(),
        },
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "verification": {
            "runtime": "onnxruntime CPUExecutionProvider vs ultralytics PyTorch (CPU)",
            "inputs": "letterboxed synthetic stall frames (fbvision.synth, seeds 7..)",
            "tolerance": TOLERANCES[precision],
            "results": rows,
            "ok": bool(rows) and all(r["ok"] for r in rows),
        },
        "ultralytics_metadata": {
            k: ultralytics_props[k]
            for k in ("date", "version", "stride", "batch", "imgsz")
            if k in ultralytics_props
        },
    }
    if extra_metadata:
        metadata.update(extra_metadata)
    sidecar = output.with_suffix(".json")
    sidecar.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    logger.info("sidecar %s written", sidecar)
    result = ExportResult(output, sidecar, metadata, rows)
    if rows and not result.verified:
        raise ExportError(f"verification failed for {output}: {[r for r in rows if not r['ok']]}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights", required=True, help="yolo11n.pt (COCO), a trained best.pt, or yolo11n.yaml"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="ONNX path (default runs/export/<name>-<imgsz>.onnx)"
    )
    parser.add_argument("--imgsz", type=int, default=640, help="square input size, multiple of 32")
    parser.add_argument("--max-batch", type=int, default=32, help="largest batch (TensorRT profiles use it)")
    parser.add_argument(
        "--half", action="store_true", help="FP16 weights (Ultralytics keeps float32 I/O on CPU)"
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: Ultralytics' choice)")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    parser.add_argument("--dynamic-hw", action="store_true", help="keep height/width dynamic as well")
    parser.add_argument("--names", default=None, help="class names: 'coco' or a dataset YAML with 'names'")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    try:
        result = export_model(
            args.weights,
            args.output,
            imgsz=args.imgsz,
            max_batch=args.max_batch,
            half=args.half,
            opset=args.opset,
            simplify=not args.no_simplify,
            names=args.names,
            dynamic_hw=args.dynamic_hw,
            verify_batches=[] if args.no_verify else None,
        )
    except ExportError as exc:
        logger.error("%s", exc)
        return 1
    meta = result.metadata
    print(
        f"\nexported {result.onnx_path} ({_mb(result.onnx_path)}) + {result.sidecar_path.name} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    print(
        f"  input {meta['input_name']} [batch 1..{meta['max_batch']}, 3, {args.imgsz}, {args.imgsz}] "
        f"{meta['input_dtype']}; output {meta['output_name']} {meta['output_shape_desc']}"
    )
    print(
        f"  {len(meta['class_names'])} classes; source {meta['source_weights']} sha256 {meta['source_sha256']}"
    )
    if result.verification:
        tol = meta["verification"]["tolerance"]
        print(
            f"  verification (ONNX Runtime vs PyTorch; tolerance boxes {tol['box_atol_px']} px + "
            f"{tol['box_rtol']} x value, scores {tol['score_atol']}):"
        )
        for row in result.verification:
            print(
                f"    batch {row['batch']:>2}: max |box diff| {row['max_box_diff_px']:.2e} px, "
                f"max |score diff| {row['max_score_diff']:.2e}  {'OK' if row['ok'] else 'MISMATCH'}"
            )
    return 0 if (result.verified or not result.verification) else 1


if __name__ == "__main__":
    sys.exit(main())
