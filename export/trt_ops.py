"""What TensorRT 10's ONNX parser accepts — checked on our graphs before a plan build is tried.

Source: the operator support matrix of NVIDIA's ONNX parser, ``onnx/onnx-tensorrt``
``docs/operators.md`` (the TensorRT 10.x branch; read at its TensorRT 10.15 revision: "supports
operators in the inclusive range of opset 9 to opset 24"; the TensorRT 10.0 revision of the same page
gives opset 9 to 20). Our production target is the NGC Triton 24.10 container (Triton 2.51), which
ships TensorRT 10.5, so only operators that the matrix already listed as supported in TensorRT 8.5
(and still lists in 10.15) are kept here, restricted to those a convolutional network exported from
PyTorch can produce. The element types are those of the 10.x matrix's "Supported Types" column
(BF16 and quantized types left out: we export FP32 and build FP16 plans). Restrictions of that page
that matter to us are checked by :func:`restriction_violations`.

Anything not listed is treated as unsupported (fail closed): add an operator here only after
reading its row in the matrix.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import TensorProto

__all__ = [
    "OPSET_RANGE",
    "SUPPORTED_OPS",
    "dtype_problems",
    "restriction_violations",
    "tensorrt_problems",
    "unsupported_ops",
]

#: TensorRT version whose matrix the lists below follow, and the ONNX opsets it parses.
TENSORRT_VERSION = "10.x (matrix of onnx-tensorrt docs/operators.md, TensorRT 10.0 to 10.15)"
#: Default-domain opsets every TensorRT 10 release parses (10.0: 9..20).
OPSET_RANGE: tuple[int, int] = (9, 20)

_F = frozenset({"FLOAT", "FLOAT16"})
_FI = frozenset({"FLOAT", "FLOAT16", "INT32", "INT64"})
_FIB = frozenset({"FLOAT", "FLOAT16", "INT32", "INT64", "BOOL"})
_B = frozenset({"BOOL"})

#: Operator (default ONNX domain) → element types TensorRT 10 accepts for its data input(s).
SUPPORTED_OPS: dict[str, frozenset[str]] = {
    # convolution, normalisation, pooling, resampling
    "Conv": _F,
    "ConvTranspose": _F,
    "BatchNormalization": _F,
    "InstanceNormalization": _F,
    "MaxPool": _F,
    "AveragePool": _F,
    "GlobalAveragePool": _F,
    "GlobalMaxPool": _F,
    "Resize": _F,
    "Upsample": _F,
    "Pad": _FI,
    "DepthToSpace": _FI,
    "SpaceToDepth": _FI,
    # activations
    "Relu": _FI,
    "LeakyRelu": _F,
    "PRelu": _F,
    "Elu": _F,
    "Sigmoid": _F,
    "HardSigmoid": _F,
    "Tanh": _F,
    "Clip": _F,
    "Softmax": _F,
    "LogSoftmax": _F,
    "Softplus": _F,
    "Erf": _F,
    # element-wise arithmetic
    "Add": _FI,
    "Sub": _FI,
    "Mul": _FI,
    "Div": _FI,
    "Pow": _F,
    "Sqrt": _F,
    "Exp": _F,
    "Log": _F,
    "Abs": _FI,
    "Neg": _FI,
    "Floor": _F,
    "Ceil": _F,
    "Max": _FI,
    "Min": _FI,
    "Sum": _FI,
    "Mean": _FI,
    "Reciprocal": _F,
    # reductions, linear algebra
    "ReduceMean": _FI,
    "ReduceMax": _FI,
    "ReduceMin": _FI,
    "ReduceSum": _FI,
    "ArgMax": _FI,
    "TopK": _FI,
    "MatMul": _F,
    "Gemm": _F,
    # comparisons and logic
    "Equal": _FI,
    "Greater": _FI,
    "Less": _FI,
    "Where": _FIB,
    "Not": _B,
    "And": _B,
    "Or": _B,
    # shape plumbing
    "Identity": _FIB,
    "Constant": _FIB,
    "ConstantOfShape": _FIB,
    "Shape": _FIB,
    "Cast": _FIB,
    "Concat": _FIB,
    "Split": _FIB,
    "Slice": _FIB,
    "Gather": _FIB,
    "Reshape": _FIB,
    "Flatten": _FIB,
    "Squeeze": _FIB,
    "Unsqueeze": _FIB,
    "Transpose": _FIB,
    "Expand": _FIB,
    "Tile": _FIB,
    "Range": _FI,
    "Dropout": _F,
}

_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_TRANSFORMS = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
#: Element types TensorRT cannot run (DOUBLE is only cast down, with clamping).
_FORBIDDEN_TYPES = {"DOUBLE", "STRING", "COMPLEX64", "COMPLEX128", "UINT16", "UINT32", "UINT64", "INT16"}


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def unsupported_ops(model: onnx.ModelProto) -> set[str]:
    """Operators of ``model`` (subgraphs included) that TensorRT 10 does not parse, as ``op_type``
    (or ``domain::op_type`` for custom-domain operators, which never are)."""
    return {_op_name(n) for n in _all_nodes(model.graph) if _op_name(n) not in SUPPORTED_OPS}


def _tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name → element type name, from shape inference, graph I/O and initializers."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types: dict[str, str] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = TensorProto.DataType.Name(vi.type.tensor_type.elem_type)
    for init in g.initializer:
        types[init.name] = TensorProto.DataType.Name(init.data_type)
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = TensorProto.DataType.Name(attr.t.data_type)
    return types


def dtype_problems(model: onnx.ModelProto) -> list[str]:
    """Element-type problems for TensorRT: float64 (or other unsupported types) anywhere; graph
    inputs/outputs that are not FLOAT/FLOAT16; a node whose data input has a type TensorRT does not
    accept for that operator (e.g. an INT64 tensor fed to a Conv)."""
    types = _tensor_types(model)
    problems = [f"tensor {name!r} is {t}" for name, t in sorted(types.items()) if t in _FORBIDDEN_TYPES]
    for vi in [*model.graph.input, *model.graph.output]:
        t = types.get(vi.name)
        if t not in ("FLOAT", "FLOAT16"):
            problems.append(f"graph input/output {vi.name!r} is {t}, expected FLOAT or FLOAT16")
    for node in model.graph.node:
        allowed = SUPPORTED_OPS.get(_op_name(node))
        if allowed is None or not node.input:
            continue
        data = node.input[1] if node.op_type == "Where" else node.input[0]
        t = types.get(data)
        if t is not None and t not in allowed:
            problems.append(
                f"{node.op_type} node {node.name!r} gets {t} input {data!r}; TensorRT takes {sorted(allowed)}"
            )
    return problems


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def restriction_violations(model: onnx.ModelProto) -> list[str]:
    """Breaches of the matrix's per-operator restrictions that our kind of graph can hit: the opset
    range; Conv/ConvTranspose/pooling only 2D or 3D, weights that are initializers, no pooling
    dilations or MaxPool indices; Resize only in its supported modes and without antialiasing."""
    problems = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not OPSET_RANGE[0] <= imp.version <= OPSET_RANGE[1]:
            problems.append(
                f"opset {imp.version} is outside TensorRT 10's {OPSET_RANGE[0]}..{OPSET_RANGE[1]}"
            )
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for node in model.graph.node:
        a = _attrs(node)
        where = f"{node.op_type} node {node.name!r}"
        if node.op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
            kernel = a.get("kernel_shape")
            if kernel is not None and len(kernel) not in (2, 3):  # type: ignore[arg-type]
                problems.append(f"{where}: {len(kernel)}D; TensorRT runs 2D or 3D only")  # type: ignore[arg-type]
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in constants:
            problems.append(f"{where}: weights {node.input[1]!r} are not an initializer")
        if node.op_type in ("MaxPool", "AveragePool"):
            if any(d != 1 for d in a.get("dilations", [])):  # type: ignore[union-attr]
                problems.append(f"{where}: dilations must be all ones")
            if len(node.output) > 1 and node.output[1]:
                problems.append(f"{where}: the Indices output is unsupported")
        if node.op_type == "Resize":
            mode = a.get("mode", b"nearest")
            ctm = a.get("coordinate_transformation_mode", b"half_pixel")
            nearest = a.get("nearest_mode", b"round_prefer_floor")
            decoded = [v.decode() if isinstance(v, bytes) else str(v) for v in (mode, ctm, nearest)]
            if decoded[0] not in _RESIZE_MODES:
                problems.append(f"{where}: mode {decoded[0]!r} unsupported")
            if decoded[1] not in _RESIZE_TRANSFORMS:
                problems.append(f"{where}: coordinate_transformation_mode {decoded[1]!r} unsupported")
            if decoded[0] == "nearest" and decoded[2] not in _RESIZE_NEAREST:
                problems.append(f"{where}: nearest_mode {decoded[2]!r} unsupported")
            if a.get("antialias", 0):
                problems.append(f"{where}: antialiasing unsupported")
    return problems


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Everything above in one list, empty when the graph should parse in TensorRT 10."""
    ops = [f"operator {op} is not supported by TensorRT 10" for op in sorted(unsupported_ops(model))]
    return ops + dtype_problems(model) + restriction_violations(model)
