"""A YOLO network that costs nothing: input ``[N,3,S,S]``, output ``[N,84,100]`` of zeros (YOLOv8 layout, 80
classes, no box over any threshold), so a benchmark measures everything but inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what every onnxruntime since 1.15 reads
ROWS, ANCHORS = 84, 100


def write_null_model(path: Path, size: int) -> Path:
    """Write the null model for ``size`` x ``size`` inputs to ``path``."""
    zeros = numpy_helper.from_array(np.zeros((1, ROWS, ANCHORS), np.float32), "zeros")
    ones = numpy_helper.from_array(np.ones(2, np.int64), "ones")
    starts, ends = numpy_helper.from_array(np.array([0]), "starts"), numpy_helper.from_array(np.array([1]), "ends")
    nodes = [  # the zeros tiled once per image of the batch: the output's batch follows the input's
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Slice", ["shape", "starts", "ends"], ["n"]),
        helper.make_node("Concat", ["n", "ones"], ["repeats"], axis=0),
        helper.make_node("Tile", ["zeros", "repeats"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "null",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", ROWS, ANCHORS])],
        initializer=[zeros, ones, starts, ends],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
