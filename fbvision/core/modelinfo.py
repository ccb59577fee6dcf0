"""What a detection model needs from the outside: input name and size, batch range, class names, provenance.

One function, :func:`load_model_info`, reads an ONNX file (graph via the ``onnx`` package when installed, else an
ONNX Runtime session) plus its sidecar ``<model>.json`` written by ``export/export_onnx.py``. Without a sidecar
it falls back to the ``metadata_props`` that Ultralytics writes (``names``, ``imgsz``, ``batch``...), so a plain
Ultralytics export (e.g. COCO ``yolo11n.onnx``) loads too. Models the pipeline cannot batch are rejected here,
with a message that says how to fix them, rather than failing later inside the inference loop.

No torch, no ultralytics: this runs in the inference worker.
"""

from __future__ import annotations

import ast
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "fbvision-model/1"
DEFAULT_MAX_BATCH = 32


class ModelError(Exception):
    """The model file cannot be used by the pipeline; the message says what is wrong and what was expected."""


@dataclass(frozen=True)
class ModelInfo:
    """Model I/O contract. ``input_size`` is (height, width); the raw output is [B, 4 + nc, N] (YOLO head)."""

    path: Path
    input_name: str
    input_size: tuple[int, int]
    max_batch: int
    dynamic_batch: bool
    class_names: tuple[str, ...]
    output_name: str
    output_shape_desc: str
    fp16: bool
    source_weights: str | None
    source_sha256: str | None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    input_dtype: str = "float32"  # what to feed: an FP16 export may keep float32 I/O

    def class_id(self, name: str) -> int:
        """Index of class ``name`` (e.g. 'horse': 17 for COCO, 0 for the demo model)."""
        try:
            return self.class_names.index(name)
        except ValueError:
            shown = ", ".join(self.class_names[:100]) + (" ..." if len(self.class_names) > 100 else "")
            raise ModelError(
                f"{self.path.name}: no class named {name!r}; the model's classes are: {shown}"
            ) from None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class _Tensor:
    name: str
    dims: tuple[int | str | None, ...]  # int for fixed, str for a named dynamic axis, None when unknown
    dtype: str


def sidecar_path(model_path: str | Path) -> Path:
    """``models/x.onnx`` -> ``models/x.json``."""
    return Path(model_path).with_suffix(".json")


def _read_graph(path: Path) -> tuple[list[_Tensor], list[_Tensor], dict[str, str], bool]:
    """Inputs, outputs, metadata_props and whether the weights are float16."""
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several types for a corrupt file
            raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
        initializer_names = {init.name for init in model.graph.initializer}

        def tensors(values) -> list[_Tensor]:
            out = []
            for value in values:
                if value.name in initializer_names:
                    continue
                tensor_type = value.type.tensor_type
                dims: list[int | str | None] = []
                for dim in tensor_type.shape.dim:
                    if dim.HasField("dim_value") and dim.dim_value > 0:
                        dims.append(int(dim.dim_value))
                    elif dim.HasField("dim_param"):
                        dims.append(dim.dim_param)
                    else:
                        dims.append(None)
                dtype = (
                    onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
                    if tensor_type.elem_type
                    else "?"
                )
                out.append(_Tensor(value.name, tuple(dims), dtype))
            return out

        fp16_weights = any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
        props = {prop.key: prop.value for prop in model.metadata_props}
        return tensors(model.graph.input), tensors(model.graph.output), props, fp16_weights

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelError(
            "reading a model needs the 'onnx' or 'onnxruntime' package; neither is installed"
        ) from exc
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc

    def ort_tensors(values) -> list[_Tensor]:
        out = []
        for value in values:
            dims = tuple(
                d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None)
                for d in value.shape
            )
            dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(value.type, value.type)
            out.append(_Tensor(value.name, dims, dtype))
        return out

    props = dict(session.get_modelmeta().custom_metadata_map)
    inputs = ort_tensors(session.get_inputs())
    # Without the onnx package the weight type is unknown; FP16 weights usually come with FP16 inputs.
    return (
        inputs,
        ort_tensors(session.get_outputs()),
        props,
        inputs[0].dtype == "float16" if inputs else False,
    )


def _parse_literal(text: str | None) -> Any:
    """Ultralytics stores metadata values as str(python object): "{0: 'person', ...}", "[640, 640]", "1"."""
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            return json.loads(text)
        except ValueError:
            return text


def _class_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, dict):
        try:
            keys = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            return ()
        if keys != list(range(len(keys))):
            return ()
        lookup = {int(k): v for k, v in value.items()}
        return tuple(str(lookup[k]) for k in keys)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return ()


def _size_pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def load_model_info(path: str | Path) -> ModelInfo:
    """Read and validate a detection model; raises :class:`ModelError` naming the problem and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"model file not found: {path} (expected an ONNX file, e.g. models/horse-demo-yolo11n-320.onnx)"
        )
    inputs, outputs, props, fp16_weights = _read_graph(path)
    if len(inputs) != 1:
        raise ModelError(
            f"{path.name}: expected exactly one input tensor (images [B,3,H,W]), found {len(inputs)}"
        )
    if not outputs:
        raise ModelError(f"{path.name}: the graph has no outputs")
    image_input, output = inputs[0], outputs[0]
    dims = image_input.dims
    if len(dims) != 4:
        raise ModelError(
            f"{path.name}: input {image_input.name!r} has shape {list(dims)}; expected 4-D [batch, 3, height, width]"
        )
    if dims[1] != 3:
        raise ModelError(
            f"{path.name}: input {image_input.name!r} has {dims[1]} channels; expected 3 (BGR->RGB images)"
        )
    if image_input.dtype not in ("float32", "float16"):
        raise ModelError(
            f"{path.name}: input {image_input.name!r} is {image_input.dtype}; expected float32 or float16"
        )
    dynamic_batch = not isinstance(dims[0], int)
    if not dynamic_batch:
        raise ModelError(
            f"{path.name}: the batch dimension is fixed at {dims[0]}; the pipeline batches frames from many cameras, "
            "so re-export with dynamic batch: python export/export_onnx.py --weights <weights> (dynamic=True)"
        )

    sidecar = sidecar_path(path)
    meta: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{sidecar}: sidecar is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise ModelError(f"{sidecar}: sidecar must be a JSON object")
    ultralytics_meta = {k: _parse_literal(v) for k, v in props.items()}

    class_names = _class_names(meta.get("class_names")) or _class_names(ultralytics_meta.get("names"))
    if not class_names:
        raise ModelError(
            f"{path.name}: no class names - neither a sidecar {sidecar.name} with 'class_names' nor Ultralytics "
            "metadata 'names' in the ONNX file; export it with export/export_onnx.py"
        )

    input_size = _size_pair(meta.get("input_size")) or _size_pair(ultralytics_meta.get("imgsz"))
    graph_size = (dims[2], dims[3]) if isinstance(dims[2], int) and isinstance(dims[3], int) else None
    if graph_size is not None:
        if input_size is not None and input_size != graph_size:
            raise ModelError(
                f"{path.name}: metadata says input {input_size[0]}x{input_size[1]} but the graph is fixed at "
                f"{graph_size[0]}x{graph_size[1]}; the sidecar does not belong to this model"
            )
        input_size = graph_size
    if input_size is None:
        raise ModelError(
            f"{path.name}: the input height/width are dynamic and no metadata gives the input size "
            "('input_size' in the sidecar or Ultralytics 'imgsz')"
        )

    max_batch = meta.get("max_batch", ultralytics_meta.get("batch"))
    if not isinstance(max_batch, int) or max_batch < 1:
        logger.warning("%s: no max batch in the metadata, assuming %d", path.name, DEFAULT_MAX_BATCH)
        max_batch = DEFAULT_MAX_BATCH
    elif max_batch == 1 and "max_batch" not in meta:
        # Ultralytics records the export batch; 1 with a dynamic axis means "no maximum was set".
        max_batch = DEFAULT_MAX_BATCH

    out_dims = ["?" if d is None else str(d) for d in output.dims]
    output_shape_desc = meta.get("output_shape_desc") or f"[{', '.join(out_dims)}]"
    if len(output.dims) != 3:
        raise ModelError(
            f"{path.name}: output {output.name!r} has shape {output_shape_desc}; expected the YOLO detection head "
            "[batch, 4 + classes, anchors] (export without NMS: nms=False)"
        )
    if isinstance(output.dims[1], int) and output.dims[1] != 4 + len(class_names):
        raise ModelError(
            f"{path.name}: output has {output.dims[1]} rows but {len(class_names)} class names; expected "
            f"4 + {len(class_names)} = {4 + len(class_names)}"
        )
    fp16 = bool(meta.get("fp16", fp16_weights)) or image_input.dtype == "float16"
    info = ModelInfo(
        path=path,
        input_name=image_input.name,
        input_size=(int(input_size[0]), int(input_size[1])),
        max_batch=int(max_batch),
        dynamic_batch=dynamic_batch,
        class_names=class_names,
        output_name=output.name,
        output_shape_desc=str(output_shape_desc),
        fp16=fp16,
        source_weights=meta.get("source_weights"),
        source_sha256=meta.get("source_sha256"),
        metadata={"sidecar": meta, "onnx": ultralytics_meta},
        input_dtype=image_input.dtype,
    )
    logger.debug(
        "model %s: input %s %s, max batch %d, %d classes",
        path.name,
        info.input_name,
        info.input_size,
        info.max_batch,
        info.num_classes,
    )
    return info
