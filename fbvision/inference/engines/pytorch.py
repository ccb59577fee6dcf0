"""The exported ONNX detector run by PyTorch (CUDA, FP16) behind the :class:`fbvision.inference.engines.ort.Engine` interface.

Where ONNX Runtime has no GPU build (the onnxruntime-gpu wheel is 255 MB; TensorRT may be missing), the same
``.onnx`` file - the same weights and graph as on the CPU - runs here as a PyTorch module. The conversion is the
field's library, `onnx2torch <https://github.com/ENOT-AutoDL/onnx2torch>`_ (it replaced a hand-written interpreter
of ~20 operators, issue 24); this module only prepares the graph for it and runs the result:

* **one static graph per batch size**, made when that size is first used (or at warm-up): the batch dimension is
  fixed and ONNX Runtime's *basic* graph optimisations (constant folding, redundant-node elimination - standard
  ONNX operators only) fold the ``Shape/Gather/Range/...`` chains of a dynamic-batch export into constants. The
  converted module then runs only the real tensor operations - no shape arithmetic on the device, no host sync -
  which is what lets ``cuda_graphs=True`` capture each batch size into a CUDA graph (it removes the Python and
  launch overhead that dominates batch 1 in eager mode);
* **two converters onnx2torch 1.5 lacks** for the opset-18 operators an Ultralytics YOLO11 export uses (``Split``
  and ``Resize`` at version 18: the version-13 semantics plus attributes this module checks hold their
  defaults), registered with onnx2torch's own ``add_converter`` - only when the installed onnx2torch has none.

:class:`TorchEngine` is the engine: ``infer`` takes the worker's float32 ``[B, 3, H, W]`` numpy batch and returns
float32 ``[B, 4 + nc, N]`` numpy, like :class:`fbvision.inference.engines.ort.OrtEngine` - host-device copies
included, because the inference worker pays them. ``infer_device`` skips the copies (pure model time, for the
benchmarks). :func:`compare_with_ort` checks it against ONNX Runtime (benchmarks/test_torch_engine.py, the GPU check).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fbvision.core.modelinfo import ModelError, ModelInfo, load_model_info
from fbvision.inference.engines.ort import timed_warmup

logger = logging.getLogger(__name__)

_REGISTER_LOCK = threading.Lock()
_registered = False


def _register_opset18_converters() -> None:
    """``Split``-18 and ``Resize``-18 for onnx2torch, as its version-13 converters (idempotent)."""
    global _registered
    with _REGISTER_LOCK:
        if _registered:
            return
        from onnx2torch.node_converters.registry import add_converter, get_converter

        def new_in_18_at_defaults(node) -> None:
            attrs = node.attributes
            if attrs.get("antialias", 0) or "axes" in attrs or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
                raise NotImplementedError(f"{node.operation_type}-18 node {node.name!r}: attributes {sorted(attrs)} "
                                          "(antialias, axes, keep_aspect_ratio_policy) are not supported")

        for op in ("Split", "Resize"):
            try:
                get_converter(operation_type=op, version=18, domain="")
                continue  # this onnx2torch has its own
            except NotImplementedError:
                pass
            v13 = get_converter(operation_type=op, version=13, domain="")

            def convert_18(node, graph, _v13=v13):
                new_in_18_at_defaults(node)  # Split-18's new num_outputs is implied by the node's outputs
                return _v13(node, graph)

            add_converter(operation_type=op, version=18)(convert_18)
        _registered = True


def static_graph(onnx_path: str | Path, batch: int):
    """The ONNX model with its batch dimension fixed to ``batch`` and its shape arithmetic folded into constants
    (ONNX Runtime's basic optimisations: standard operators only, no fused contrib ops)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = int(batch)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="fbv-torch-") as tmp:
        out = Path(tmp) / "static.onnx"
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


#: onnx2torch modules whose inputs after the first are shapes, sizes, scales or indices: read on the host
#: (``.tolist()``, ``if torch.any(...)``) in their forward.
_SHAPE_INPUT_MODULES = frozenset({"OnnxReshape", "OnnxResize", "OnnxSlice", "OnnxSplit13", "OnnxSplit", "OnnxExpand",
                                  "OnnxTile", "OnnxConstantOfShape"})


def _shape_constants(module) -> list[tuple[Any, str]]:
    """(owning module, buffer name) of every constant that feeds a shape input of a :data:`_SHAPE_INPUT_MODULES`
    node of the converted fx graph."""
    import torch

    found = []
    for node in module.graph.nodes:
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ not in _SHAPE_INPUT_MODULES:
            continue
        for arg in (*node.args[1:], *node.kwargs.values()):
            if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
                owner, _, name = arg.target.rpartition(".")
                found.append((module.get_submodule(owner) if owner else module, name))
    return found


def convert_module(onnx_path: str | Path, batch: int, device, dtype, *, channels_last: bool = False):
    """``onnx_path`` at batch size ``batch`` as an eval-mode PyTorch module on ``device`` in ``dtype``.

    The tensors go to ``device``, except the constants that only say a shape (reshape targets, resize scales,
    slice bounds, split sizes): onnx2torch reads those on the host in its forward, and on a CUDA device each read
    would be a device-to-host copy - a sync per operator, and an error inside a CUDA-graph capture. They stay on
    the CPU in their own dtype (tests/unit/test_engines.py runs the module on the ``meta`` device, where any such
    read fails, to prove none is left)."""
    import torch
    from onnx2torch import convert

    _register_opset18_converters()
    module = convert(static_graph(onnx_path, batch)).eval()
    host = [(owner, name, owner._buffers[name]) for owner, name in _shape_constants(module)
            if name in owner._buffers]
    module = module.to(device=device, dtype=dtype)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    for owner, name, original in host:
        owner._buffers[name] = original  # the CPU tensor as converted (dtype and values untouched)
    return module


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
        self.channels_last = bool(channels_last)
        self.dtype = torch.float16 if self.half else torch.float32
        started = time.perf_counter()
        self._modules: dict[int, Any] = {}  # batch size -> converted module (static graph)
        self._module(1)  # converts now: a model onnx2torch cannot take fails at start, not at the first frame
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
    def _module(self, b: int):
        module = self._modules.get(b)
        if module is None:
            t0 = time.perf_counter()
            module = self._modules[b] = convert_module(self.info.path, b, self.device, self.dtype,
                                                       channels_last=self.channels_last)
            logger.debug("model %s: batch %d converted in %.2f s", self.info.path.name, b, time.perf_counter() - t0)
        return module

    def _forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=self.torch.channels_last)
        return self._module(int(x.shape[0]))(x)

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
            for _ in range(2):  # conversion + allocator warm-up outside the capture
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._forward(static_in)
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
            return self._forward(x)

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
