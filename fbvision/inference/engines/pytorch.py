"""The exported ONNX detector run by PyTorch (CUDA, FP16) behind the :class:`fbvision.inference.engines.ort.Engine` interface.

Where ONNX Runtime has no GPU build (the onnxruntime-gpu wheel is 255 MB; TensorRT may be missing), the same
``.onnx`` file - the same weights and graph as on the CPU - runs here as PyTorch operations. No Ultralytics, no
converter package: only ``onnx`` (to read the protobuf) and ``torch``. :class:`OnnxTorchGraph` executes the
graph's nodes in order with ``torch`` (``torch.nn.functional`` for Conv, MaxPool, Resize ...); it supports the
operators a YOLO11 detection export uses and raises ``NotImplementedError`` naming any other.

Per batch size the graph is *planned* once: every value that depends only on shapes and initializers (anchor
grids, reshape targets - the ``Shape/Gather/Range/...`` chains of a dynamic-batch export) is computed in numpy
at plan time and kept as a device tensor, so a forward pass runs only the real tensor operations (about 200
kernels for YOLO11n; ``Sigmoid`` + ``Mul`` pairs become one ``silu``). With ``cuda_graphs=True`` each batch size
is also captured into a CUDA graph, which removes the Python/launch overhead that dominates batch 1 in eager mode.

:class:`TorchEngine` is the engine: ``infer`` takes the worker's float32 ``[B, 3, H, W]`` numpy batch and returns
float32 ``[B, 4 + nc, N]`` numpy, like :class:`fbvision.inference.engines.ort.OrtEngine` - host-device copies included, because
the inference worker pays them. ``infer_device`` skips the copies (pure model time, for the benchmarks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fbvision.core.modelinfo import ModelError, ModelInfo, load_model_info
from fbvision.inference.engines.ort import timed_warmup

logger = logging.getLogger(__name__)

# ONNX TensorProto element types -> numpy
_NP_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
              11: np.float64}


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


class _Node:
    __slots__ = ("op", "inputs", "outputs", "attrs", "name")

    def __init__(self, op: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any], name: str):
        self.op, self.inputs, self.outputs, self.attrs, self.name = op, inputs, outputs, attrs, name


class OnnxTorchGraph:
    """An ONNX graph (one image input, one output) executed with PyTorch on ``device`` in ``dtype``."""

    def __init__(self, onnx_path: str | Path, device: str = "cpu", dtype: str = "float32", *,
                 channels_last: bool = False):
        import onnx
        import torch
        from onnx import numpy_helper

        model = onnx.load(str(onnx_path))
        graph = model.graph
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
        self.channels_last = channels_last
        self.statics: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        init_names = set(self.statics)
        self.input_name = next(i.name for i in graph.input if i.name not in init_names)
        self.output_name = graph.output[0].name
        nodes = [_Node(n.op_type, list(n.input), list(n.output), _attrs(n), n.name) for n in graph.node]
        for node in nodes:
            if node.op == "Constant":
                self.statics[node.outputs[0]] = self._constant_value(node, numpy_helper)
        self.nodes = [n for n in nodes if n.op != "Constant"]
        self._fuse_silu()
        unsupported = sorted({n.op for n in self.nodes} - set(_OPS))
        if unsupported:
            raise NotImplementedError(f"{Path(onnx_path).name}: operators not supported by OnnxTorchGraph: "
                                      f"{', '.join(unsupported)}")
        self._weights: dict[str, Any] = {}  # initializer name -> device tensor (Conv weights, biases ...)
        self._plans: dict[tuple[int, ...], tuple[dict[str, Any], list[_Node]]] = {}

    @staticmethod
    def _constant_value(node: _Node, numpy_helper) -> np.ndarray:
        attrs = node.attrs
        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
            if key in attrs:
                return np.array(attrs[key], dtype=dtype)
        for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
            if key in attrs:
                return np.array(list(attrs[key]), dtype=dtype)
        raise NotImplementedError(f"Constant node {node.name} with attributes {sorted(attrs)}")

    def _fuse_silu(self) -> None:
        """``y = x * sigmoid(x)`` (every activation of YOLO11) as one ``silu`` node: half the kernels."""
        consumers: dict[str, int] = {}
        for node in self.nodes:
            for name in node.inputs:
                consumers[name] = consumers.get(name, 0) + 1
        sigmoid_of = {n.outputs[0]: n for n in self.nodes if n.op == "Sigmoid"}
        drop: set[int] = set()
        for node in self.nodes:
            if node.op != "Mul" or len(node.inputs) != 2:
                continue
            a, b = node.inputs
            for x, s in ((a, b), (b, a)):
                sig = sigmoid_of.get(s)
                if sig is not None and sig.inputs[0] == x and consumers.get(s) == 1:
                    node.op, node.inputs = "Silu", [x]
                    drop.add(id(sig))
                    break
        self.nodes = [n for n in self.nodes if id(n) not in drop]

    # -- planning -------------------------------------------------------------------------------------------
    def _to_tensor(self, value: np.ndarray):
        """A static numpy value as a device tensor: floats in the compute dtype, integers as int64."""
        torch = self.torch
        value = np.ascontiguousarray(value)
        if not value.flags.writeable:  # initializers are read-only views; torch wants to own writable memory
            value = value.copy()
        if np.issubdtype(value.dtype, np.floating):
            return torch.as_tensor(value, device=self.device).to(self.dtype)
        if value.dtype == np.bool_:
            return torch.as_tensor(value, device=self.device)
        return torch.as_tensor(value.astype(np.int64), device=self.device)

    def _weight(self, name: str, conv: bool):
        cached = self._weights.get(name)
        if cached is None:
            cached = self._to_tensor(self.statics[name])
            if conv and self.channels_last and cached.dim() == 4:
                cached = cached.contiguous(memory_format=self.torch.channels_last)
            self._weights[name] = cached
        return cached

    def plan(self, shape: tuple[int, ...]) -> tuple[dict[str, Any], list[_Node]]:
        """Run the graph once on zeros of ``shape``: fold every shape-only value into a constant, keep the rest."""
        key = tuple(int(s) for s in shape)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        torch = self.torch
        values: dict[str, Any] = dict(self.statics)
        x = torch.zeros(key, device=self.device, dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        values[self.input_name] = x
        dynamic_nodes: list[_Node] = []
        consts: dict[str, Any] = {}  # what the dynamic nodes read that no dynamic node produces
        produced = {self.input_name}
        with torch.inference_mode():
            for node in self.nodes:
                args = [values[name] if name else None for name in node.inputs]
                # Shape reads only the (planned) shape of a tensor: a constant of the plan, not an operation.
                is_dynamic = node.op != "Shape" and any(isinstance(a, torch.Tensor) for a in args)
                if is_dynamic:
                    tensor_args = _TENSOR_ARGS.get(node.op, ())
                    for i, name in enumerate(node.inputs):
                        if not name or name in produced:
                            continue
                        if name not in consts:
                            # Tensor operands become device tensors; shapes, axes, sizes, scales stay numpy.
                            if i in tensor_args or node.op == "Concat":
                                consts[name] = (self._weight(name, node.op == "Conv") if name in self.statics
                                                else self._to_tensor(np.asarray(values[name])))
                            else:
                                consts[name] = values[name]
                        args[i] = consts[name]
                    dynamic_nodes.append(node)
                    produced.update(node.outputs)
                outs = _OPS[node.op](self, node, args, is_dynamic)
                for name, value in zip(node.outputs, outs, strict=False):
                    values[name] = value
        plan = (consts, dynamic_nodes)
        self._plans[key] = plan
        return plan

    def forward(self, x):
        """``x``: a device tensor [B, 3, H, W] in the compute dtype. Returns the output tensor (device)."""
        consts, nodes = self.plan(tuple(x.shape))
        values: dict[str, Any] = dict(consts)
        if self.channels_last:
            x = x.contiguous(memory_format=self.torch.channels_last)
        values[self.input_name] = x
        for node in nodes:
            outs = _OPS[node.op](self, node, [values[n] if n else None for n in node.inputs], True)
            for name, value in zip(node.outputs, outs, strict=False):
                values[name] = value
        return values[self.output_name]


# -- operators: f(graph, node, args, dynamic) -> list of outputs; numpy when nothing is a tensor -----------------


def _ints(value) -> list[int]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _binary(np_fn, torch_name):
    def op(g, node, args, dynamic):
        a, b = args
        if not dynamic:
            a, b = np.asarray(a), np.asarray(b)
            if np_fn is np.divide and np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
                return [np.asarray(np.trunc(a / b)).astype(a.dtype)]  # ONNX integer Div truncates
            out = np.asarray(np_fn(a, b))
            return [out.astype(a.dtype) if out.dtype != a.dtype and a.dtype == b.dtype else out]
        t = g.torch
        a = a if isinstance(a, t.Tensor) else g._to_tensor(np.asarray(a))
        b = b if isinstance(b, t.Tensor) else g._to_tensor(np.asarray(b))
        return [getattr(t, torch_name)(a, b)]

    return op


def _conv(g, node, args, dynamic):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    a = node.attrs
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise NotImplementedError(f"Conv {node.name}: auto_pad={a['auto_pad']}")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise NotImplementedError(f"Conv {node.name}: asymmetric pads {pads}")
    return [g.torch.nn.functional.conv2d(x, w, b, stride=tuple(a.get("strides", (1, 1))), padding=tuple(pads[:2]),
                                         dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)))]


def _silu(g, node, args, dynamic):
    return [g.torch.nn.functional.silu(args[0])]


def _sigmoid(g, node, args, dynamic):
    if not dynamic:
        return [1.0 / (1.0 + np.exp(-args[0]))]
    return [g.torch.sigmoid(args[0])]


def _concat(g, node, args, dynamic):
    axis = int(node.attrs["axis"])
    if not dynamic:
        return [np.concatenate([np.atleast_1d(a) for a in args], axis=axis)]
    t = g.torch
    return [t.cat([a if isinstance(a, t.Tensor) else g._to_tensor(np.asarray(a)) for a in args], dim=axis)]


def _split(g, node, args, dynamic):
    x = args[0]
    axis = int(node.attrs.get("axis", 0))
    if len(args) > 1 and args[1] is not None:
        sizes = _ints(args[1])
    else:
        n = int(node.attrs.get("num_outputs", len(node.outputs)))
        sizes = [x.shape[axis] // n] * n
    if not dynamic:
        return np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    return list(g.torch.split(x, sizes, dim=axis))


def _reshape(g, node, args, dynamic):
    x, shape = args
    shape = _ints(shape)
    if not int(node.attrs.get("allowzero", 0)):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _transpose(g, node, args, dynamic):
    perm = list(node.attrs.get("perm", reversed(range(args[0].ndim))))
    if not dynamic:
        return [np.transpose(args[0], perm)]
    return [args[0].permute(*perm)]


def _matmul(g, node, args, dynamic):
    if not dynamic:
        return [np.matmul(*args)]
    return [g.torch.matmul(*args)]


def _softmax(g, node, args, dynamic):
    axis = int(node.attrs.get("axis", -1))
    return [g.torch.softmax(args[0], dim=axis)]


def _maxpool(g, node, args, dynamic):
    a = node.attrs
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:] or int(a.get("ceil_mode", 0)):
        raise NotImplementedError(f"MaxPool {node.name}: pads {pads}, ceil_mode {a.get('ceil_mode')}")
    return [g.torch.nn.functional.max_pool2d(args[0], tuple(a["kernel_shape"]), tuple(a.get("strides", (1, 1))),
                                             tuple(pads[:2]), tuple(a.get("dilations", (1, 1))))]


def _resize(g, node, args, dynamic):
    a = node.attrs
    if a.get("mode", "nearest") != "nearest" or a.get("coordinate_transformation_mode") not in (
        "asymmetric", None
    ) or a.get("nearest_mode", "round_prefer_floor") != "floor":
        raise NotImplementedError(f"Resize {node.name}: {a}")
    x = args[0]
    scales = args[2] if len(args) > 2 and args[2] is not None and np.asarray(args[2]).size else None
    if scales is not None:
        scales = [float(s) for s in np.asarray(scales).tolist()]
        return [g.torch.nn.functional.interpolate(x, scale_factor=tuple(scales[2:]), mode="nearest")]
    sizes = _ints(args[3])
    return [g.torch.nn.functional.interpolate(x, size=tuple(sizes[2:]), mode="nearest")]


def _shape(g, node, args, dynamic):
    shape = np.array(list(args[0].shape), dtype=np.int64)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", None)
    return [shape[start:end]]


def _gather(g, node, args, dynamic):
    data, indices = args
    axis = int(node.attrs.get("axis", 0))
    if not dynamic or not isinstance(data, g.torch.Tensor):
        return [np.take(np.asarray(data), np.asarray(indices), axis=axis)]
    idx = g.torch.as_tensor(np.asarray(indices), device=data.device, dtype=g.torch.int64)
    out = g.torch.index_select(data, axis, idx.reshape(-1))
    return [out.reshape(list(data.shape[:axis]) + list(idx.shape) + list(data.shape[axis + 1:]))]


def _unsqueeze(g, node, args, dynamic):
    x = args[0]
    axes = _ints(args[1]) if len(args) > 1 and args[1] is not None else list(node.attrs["axes"])
    ndim = (x.ndim if hasattr(x, "ndim") else np.ndim(x)) + len(axes)
    axes = sorted(a % ndim for a in axes)
    for axis in axes:
        x = np.expand_dims(x, axis) if not dynamic else x.unsqueeze(axis)
    return [x]


def _squeeze(g, node, args, dynamic):
    x = args[0]
    axes = _ints(args[1]) if len(args) > 1 and args[1] is not None else list(node.attrs.get("axes", []))
    if not dynamic:
        return [np.squeeze(x, axis=tuple(axes) if axes else None)]
    for axis in sorted((a % x.ndim for a in axes), reverse=True):
        x = x.squeeze(axis)
    return [x]


def _range(g, node, args, dynamic):
    start, limit, delta = (np.asarray(a).item() for a in args)
    return [np.arange(start, limit, delta, dtype=np.asarray(args[0]).dtype)]


def _cast(g, node, args, dynamic):
    to = int(node.attrs["to"])
    if not dynamic:
        return [np.asarray(args[0]).astype(_NP_DTYPES[to])]
    torch = g.torch
    target = {1: g.dtype, 10: g.dtype, 11: g.dtype, 7: torch.int64, 6: torch.int32, 9: torch.bool}.get(to)
    if target is None:
        raise NotImplementedError(f"Cast {node.name} to ONNX type {to}")
    return [args[0].to(target)]


def _constant_of_shape(g, node, args, dynamic):
    from onnx import numpy_helper

    value = node.attrs.get("value")
    fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    return [np.full(_ints(args[0]), fill.reshape(-1)[0], dtype=fill.dtype)]


def _expand(g, node, args, dynamic):
    x, shape = args
    shape = _ints(shape)
    if not dynamic:
        return [np.broadcast_to(x, np.broadcast_shapes(np.shape(x), tuple(shape))).copy()]
    target = np.broadcast_shapes(tuple(x.shape), tuple(shape))
    return [x.expand(*target)]


def _slice(g, node, args, dynamic):
    x = args[0]
    starts, ends = _ints(args[1]), _ints(args[2])
    ndim = x.ndim if hasattr(x, "ndim") else np.ndim(x)
    axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[ax % ndim] = slice(s, None if e >= 2**62 else e, st)
    return [x[tuple(index)]]


#: Which inputs of an operator are tensors (the others - shapes, axes, sizes, scales - are read as numbers).
_TENSOR_ARGS = {"Conv": (0, 1, 2), "MatMul": (0, 1), "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0, 1),
                "Gather": (0,), "Expand": (0,), "Sigmoid": (0,), "Silu": (0,), "Softmax": (0,), "Transpose": (0,),
                "Reshape": (0,), "Split": (0,), "Slice": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Cast": (0,),
                "MaxPool": (0,), "Resize": (0,)}

_OPS = {
    "Conv": _conv, "Silu": _silu, "Sigmoid": _sigmoid, "Mul": _binary(np.multiply, "mul"),
    "Add": _binary(np.add, "add"), "Sub": _binary(np.subtract, "sub"), "Div": _binary(np.divide, "div"),
    "Concat": _concat, "Split": _split, "Reshape": _reshape, "Transpose": _transpose, "MatMul": _matmul,
    "Softmax": _softmax, "MaxPool": _maxpool, "Resize": _resize, "Shape": _shape, "Gather": _gather,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Range": _range, "Cast": _cast,
    "ConstantOfShape": _constant_of_shape, "Expand": _expand, "Slice": _slice,
}


class TorchEngine:
    """:class:`fbvision.inference.engines.ort.Engine` over an exported ONNX model, run by PyTorch (``device`` 'cuda' or 'cpu').

    ``half`` (default on CUDA) computes in FP16 - the weights are cast at load; input and output stay float32
    numpy, as the worker expects. ``cuda_graphs`` captures one CUDA graph per batch size (at warm-up or first
    use). ``provider`` names what runs, e.g. ``torch-cuda-fp16+graphs (NVIDIA H100 80GB HBM3)``.
    """

    def __init__(self, model_path: str | Path, *, device: str | None = None, half: bool | None = None,
                 cuda_graphs: bool = False, channels_last: bool | None = None, max_batch: int | None = None,
                 model_info: ModelInfo | None = None):
        import torch

        self.info = model_info or load_model_info(model_path)
        if not self.info.dynamic_batch:
            raise ModelError(f"{self.info.path.name}: the batch dimension is not dynamic")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes per batch size: let cuDNN pick its fastest kernels
        self.half = cuda if half is None else bool(half)
        self.cuda_graphs = bool(cuda_graphs and cuda)
        channels_last = cuda if channels_last is None else channels_last
        self.max_batch = int(max_batch or self.info.max_batch)
        self.input_size = tuple(self.info.input_size)
        self.class_names = list(self.info.class_names)
        self.torch = torch
        started = time.perf_counter()
        self.graph = OnnxTorchGraph(self.info.path, device=str(self.device),
                                    dtype="float16" if self.half else "float32", channels_last=channels_last)
        self.dtype = self.graph.dtype
        name = torch.cuda.get_device_name(self.device) if cuda else "cpu"
        self.device_name = name
        self.provider = (f"torch-{self.device.type}-{'fp16' if self.half else 'fp32'}"
                         f"{'+graphs' if self.cuda_graphs else ''} ({name})")
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}  # batch -> (cuda graph, static input, static output)
        self._pinned: dict[int, Any] = {}
        logger.info("model %s on %s: input %dx%d, max batch %d, ready in %.1f s", self.info.path.name,
                    self.provider, self.input_size[1], self.input_size[0], self.max_batch,
                    time.perf_counter() - started)

    # -- device-side --------------------------------------------------------------------------------------------
    def _check(self, batch_size: int) -> None:
        if not 1 <= batch_size <= self.max_batch:
            raise ValueError(f"batch size {batch_size} outside 1..{self.max_batch}")

    def _capture(self, b: int):
        torch = self.torch
        h, w = self.input_size
        static_in = torch.zeros((b, 3, h, w), device=self.device, dtype=self.dtype)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(2):  # plan + allocator warm-up outside the capture
                self.graph.forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.graph.forward(static_in)
        self._graphs[b] = (graph, static_in, static_out)
        return self._graphs[b]

    def infer_device(self, x):
        """``x``: a device tensor [B, 3, H, W] (compute dtype, 0..1). Returns the raw head on the device."""
        self._check(int(x.shape[0]))
        if self.cuda_graphs:
            b = int(x.shape[0])
            graph, static_in, static_out = self._graphs.get(b) or self._capture(b)
            static_in.copy_(x)
            graph.replay()
            return static_out
        with self.torch.inference_mode():
            return self.graph.forward(x)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    # -- the Engine interface -----------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self.input_size:
            raise ValueError(f"batch of shape {batch.shape}; expected [B, 3, {self.input_size[0]}, {self.input_size[1]}]")
        b = int(batch.shape[0])
        self._check(b)
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            pinned = self._pinned.get(b)
            if pinned is None:
                pinned = self._pinned[b] = torch.empty(host.shape, dtype=torch.float32).pin_memory()
            pinned.copy_(host)
            x = pinned.to(self.device, non_blocking=True).to(self.dtype)
        else:
            x = host.to(self.dtype)
        out = self.infer_device(x)
        return out.float().cpu().numpy()

    def warmup(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        timings = timed_warmup(self, batch_sizes)
        logger.info("model %s warmed up on %s for batch sizes %s", self.info.path.name, self.provider, list(timings))
        return timings


def compare_with_ort(model_path: str | Path, engine: TorchEngine, batch_sizes: Sequence[int] = (1, 2),
                     seed: int = 0) -> list[dict[str, float]]:
    """Max |difference| of ``engine`` against ONNX Runtime (CPU) on random batches: boxes (px) and scores."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    h, w = engine.input_size
    rng = np.random.default_rng(seed)
    rows = []
    for b in batch_sizes:
        x = rng.random((b, 3, h, w), dtype=np.float32)
        ref = session.run(None, {name: x})[0]
        got = engine.infer(x)
        rows.append({"batch": int(b), "max_box_diff_px": float(np.abs(ref[:, :4] - got[:, :4]).max()),
                     "max_score_diff": float(np.abs(ref[:, 4:] - got[:, 4:]).max())})
    return rows
