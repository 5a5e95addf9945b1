"""The three YOLO output layouts, format detection, static batches and provider fallback.

Each test model is a tiny ONNX graph that ignores the image except for its batch size and returns a
known output tiled once per image, so every decoded number can be checked exactly.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from framefarm.errors import ModelError
from framefarm.vision import runtime
from framefarm.vision.detector import Detector
from framefarm.vision.formats import OutputFormat, class_count, detect_format
from framefarm.vision.model import YoloModel, load_names

SIZE = 160
ONNX_OPSET, ONNX_IR = 17, 8
"""Old enough for every onnxruntime the project allows."""
CONF, IOU = 0.25, 0.45
WIDE = np.zeros((240, 320, 3), np.uint8)
"""Scale 0.5 into 160x160, padded 20 px top and bottom."""
TALL = np.zeros((320, 160, 3), np.uint8)
"""Scale 0.5 into 160x160, padded 40 px left and right."""

Dim = int | str


def _build(
    path: Path,
    output: np.ndarray,
    *,
    batch: Dim = "batch",
    size: tuple[Dim, Dim] = (SIZE, SIZE),
    input_type: int = TensorProto.FLOAT,
    declared: list[Dim] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write an ONNX model whose output is `output` ([rows, cols]) repeated once per input image."""
    const = numpy_helper.from_array(output[None], "pattern")
    ones = numpy_helper.from_array(np.ones(2, np.int64), "ones")
    starts, ends = numpy_helper.from_array(np.array([0]), "starts"), numpy_helper.from_array(np.array([1]), "ends")
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Slice", ["shape", "starts", "ends"], ["n"]),
        helper.make_node("Concat", ["n", "ones"], ["repeats"], axis=0),
        helper.make_node("Tile", ["pattern", "repeats"], ["output0"]),
    ]
    out_type = helper.np_dtype_to_tensor_dtype(output.dtype)
    out_shape = declared or [batch, *output.shape]
    graph = helper.make_graph(
        nodes,
        "pattern",
        [helper.make_tensor_value_info("images", input_type, [batch, 3, *size])],
        [helper.make_tensor_value_info("output0", out_type, out_shape)],
        initializer=[const, ones, starts, ends],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR)
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _v8_output() -> np.ndarray:
    """[4+3, 9]: a kept box, its weaker twin NMS removes, another class, one under conf, five empty.

    Nine anchors, not six: a [N, 7, 6] output would be taken for end2end (rule 1 of detect_format).
    """
    out = np.zeros((7, 9), np.float32)
    for col, (cx, cy, w, h, cls, score) in enumerate(
        [(40, 70, 40, 60, 1, 0.9), (42, 71, 40, 60, 1, 0.6), (120, 100, 20, 20, 0, 0.5), (10, 10, 4, 4, 2, 0.1)]
    ):
        out[:4, col] = (cx, cy, w, h)
        out[4 + cls, col] = score
    return out


def _v5_output() -> np.ndarray:
    """[10, 5+3]: obj 0.9 x cls 0.8 kept; its twin (0.8 x 0.5) suppressed; 0.5 x 0.6 kept; obj 0.2 dropped."""
    out = np.zeros((10, 8), np.float32)
    rows = [(40, 70, 40, 60, 0.9, 2, 0.8), (42, 71, 40, 60, 0.8, 2, 0.5), (120, 100, 20, 20, 0.5, 0, 0.6)]
    rows.append((10, 10, 4, 4, 0.2, 1, 1.0))
    for row, (cx, cy, w, h, obj, cls, score) in enumerate(rows):
        out[row, :5] = (cx, cy, w, h, obj)
        out[row, 5 + cls] = score
    return out


def _end2end_output(dtype: type[np.floating] = np.float16) -> np.ndarray:
    """[5, 6] x1 y1 x2 y2 score class: two overlapping boxes of one class (no NMS keeps both)."""
    rows = [(20, 40, 60, 100, 0.875, 3), (22, 41, 62, 101, 0.75, 3), (110, 90, 130, 110, 0.5, 1)]
    rows += [(0, 0, 8, 8, 0.125, 0), (0, 0, 0, 0, 0, 0)]
    return np.array(rows, dtype)


# the first box of every pattern, (20, 40, 60, 100) in input pixels, in each test image's own pixels
FIRST_IN_WIDE = (40.0, 40.0, 120.0, 160.0)
FIRST_IN_TALL = (0.0, 80.0, 40.0, 200.0)  # x1 = (20 - 40) / 0.5 = -40, clipped to 0
NAMES = {0: "cat", 1: "dog", 2: "cow", 3: "owl"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "v8": _build(root / "v8.onnx", _v8_output(), declared=["batch", "rows", "anchors"]),
        "v5_static4": _build(root / "v5.onnx", _v5_output(), batch=4),
        "e2e_fp16": _build(
            root / "e2e.onnx",
            _end2end_output(),
            input_type=TensorProto.FLOAT16,
            metadata={"names": repr(NAMES), "end2end": "True"},
        ),
        "e2e_fp32": _build(root / "e2e32.onnx", _end2end_output(np.float32)),
        "square": _build(root / "square.onnx", np.zeros((7, 7), np.float32)),
        "dynamic_size": _build(
            root / "dyn.onnx", _v8_output(), size=("height", "width"), metadata={"imgsz": "[96, 128]"}
        ),
    }


def _summary(detections: list) -> list[tuple[int, float, tuple[float, ...]]]:
    return [(d.class_id, round(d.confidence, 4), tuple(round(v, 3) for v in d.box)) for d in detections]


# ---------------------------------------------------------------- decoding through the Detector


def test_yolov8_probed_decoded_with_nms(models: dict[str, Path]) -> None:
    model = YoloModel(models["v8"], threads=1)
    assert (model.format, model.output_shape, model.output_classes) == (OutputFormat.YOLOV8, (1, 7, 9), 3)
    wide, tall = Detector(model, conf=CONF, iou=IOU).detect([WIDE, TALL])
    assert _summary(wide) == [(1, 0.9, FIRST_IN_WIDE), (0, 0.5, (220.0, 140.0, 260.0, 180.0))]
    assert _summary(tall)[0] == (1, 0.9, FIRST_IN_TALL)


def test_yolov5_objectness_times_class_on_padded_static_batch(models: dict[str, Path]) -> None:
    model = YoloModel(models["v5_static4"], threads=1)
    assert (model.format, model.fixed_batch, model.output_classes) == (OutputFormat.YOLOV5, 4, 3)
    detector = Detector(model, conf=CONF, iou=IOU, max_batch=2)
    assert detector.max_batch == 4  # a static model's batch wins
    three = detector.detect([WIDE, TALL, WIDE])
    assert len(three) == 3
    assert _summary(three[0]) == [(2, 0.72, FIRST_IN_WIDE), (0, 0.3, (220.0, 140.0, 260.0, 180.0))]
    assert _summary(three[1])[0] == (2, 0.72, FIRST_IN_TALL)
    assert three[2] == three[0]
    six = detector.detect([WIDE] * 5 + [TALL])  # split into 4 + 2 padded to 4
    assert len(six) == 6 and six[4] == three[0] and six[5] == three[1]


def test_end2end_fp16_thresholds_without_nms_and_caps(models: dict[str, Path]) -> None:
    model = YoloModel(models["e2e_fp16"], threads=1)
    assert model.input_dtype is np.float16 and model.format is OutputFormat.END2END
    assert model.output_classes is None
    assert model.metadata_names == ["cat", "dog", "cow", "owl"] == load_names(None, model)
    [wide] = Detector(model, conf=CONF, iou=IOU).detect([WIDE])
    overlap = (44.0, 42.0, 124.0, 162.0)  # IoU with the first is ~0.86: NMS would remove it
    assert _summary(wide) == [(3, 0.875, FIRST_IN_WIDE), (3, 0.75, overlap), (1, 0.5, (220.0, 140.0, 260.0, 180.0))]
    [capped] = Detector(model, conf=CONF, iou=IOU, max_det=2).detect([WIDE])
    assert _summary(capped) == _summary(wide)[:2]


def test_end2end_detected_from_shape_alone(models: dict[str, Path]) -> None:
    model = YoloModel(models["e2e_fp32"], threads=1)
    assert model.format is OutputFormat.END2END and model.metadata_names is None
    assert len(Detector(model, conf=0.6).detect([TALL])[0]) == 2


def test_detector_handles_empty_and_long_lists(models: dict[str, Path]) -> None:
    detector = Detector(YoloModel(models["v8"], threads=1), max_batch=3)
    assert detector.detect([]) == []
    results = detector.detect([WIDE, TALL] * 4)
    assert len(results) == 8 and results[6] == results[0] and results[7] == results[1]


# ---------------------------------------------------------------- format detection


@pytest.mark.parametrize(
    ("shape", "metadata", "expected"),
    [
        ((1, 84, 8400), {}, OutputFormat.YOLOV8),
        ((1, 25200, 85), {}, OutputFormat.YOLOV5),
        ((1, 300, 6), {}, OutputFormat.END2END),
        ((1, 300, 6), {"end2end": "False"}, OutputFormat.YOLOV5),
        ((1, 25200, 6), {}, OutputFormat.YOLOV5),  # a one-class YOLOv5: too many rows for end2end
        ((1, 1000, 6), {"end2end": "True"}, OutputFormat.END2END),
        ((1, 5, 6), {}, OutputFormat.END2END),
    ],
)
def test_auto_detection_rule(shape: tuple[int, ...], metadata: dict[str, str], expected: OutputFormat) -> None:
    assert detect_format(shape, "auto", metadata) is expected


def test_explicit_format_is_checked_not_guessed() -> None:
    assert detect_format((1, 300, 6), "yolov5") is OutputFormat.YOLOV5
    assert class_count(OutputFormat.YOLOV5, (1, 300, 6)) == 1
    with pytest.raises(ModelError, match="cannot be format end2end"):
        detect_format((1, 84, 8400), "end2end")
    with pytest.raises(ModelError, match=r"not \[N, rows, cols\]"):
        detect_format((1, 84), "auto")
    with pytest.raises(ValueError):
        detect_format((1, 84, 8400), "yolov99")


def test_ambiguous_shape_asks_for_format(models: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"ambiguous.*set `format`"):
        YoloModel(models["square"], threads=1)
    assert YoloModel(models["square"], threads=1, format="yolov8").format is OutputFormat.YOLOV8


# ---------------------------------------------------------------- input size


def test_dynamic_size_from_metadata_or_argument(models: dict[str, Path]) -> None:
    assert YoloModel(models["dynamic_size"], threads=1).input_size == (96, 128)
    model = YoloModel(models["dynamic_size"], threads=1, size=(64, 64))
    assert model.input_size == (64, 64)
    [[first, *_]] = Detector(model).detect([np.zeros((64, 64, 3), np.uint8)])
    assert first.box == (20.0, 40.0, 60.0, 64.0)  # no letterbox at 64x64; y2 clipped from 100
    with pytest.raises(ModelError, match="fixed 160x160 input"):
        YoloModel(models["v8"], threads=1, size=(320, 320))


# ---------------------------------------------------------------- providers


def test_cuda_missing_falls_back_to_cpu_with_warning(models: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="framefarm.vision.runtime"):
        chosen = runtime.select_providers("cuda", [runtime.CPU_EP])  # an onnxruntime build without CUDA
    assert chosen == [runtime.CPU_EP]
    assert any("CUDAExecutionProvider" in r.message and "falling back" in r.message for r in caplog.records)
    model = YoloModel(models["v8"], device="cuda")  # whatever this machine's onnxruntime has
    has_cuda = runtime.CUDA_EP in ort.get_available_providers()
    assert model.providers[-1] == runtime.CPU_EP and model.on_gpu == has_cuda


def test_provider_chains_and_options() -> None:
    everything = [runtime.TENSORRT_EP, runtime.CUDA_EP, runtime.CPU_EP]
    assert runtime.select_providers("auto", everything) == everything
    assert runtime.select_providers("auto", [runtime.CPU_EP]) == [runtime.CPU_EP]
    assert runtime.select_providers("cuda", everything) == [runtime.CUDA_EP, runtime.CPU_EP]
    assert runtime.select_providers("tensorrt", [runtime.CUDA_EP, runtime.CPU_EP])[0] == runtime.CUDA_EP
    assert runtime.provider_options(runtime.CUDA_EP, 2, None) == {"device_id": "2"}
    profile = runtime.TensorrtProfile("images", 640, 480, 16)
    trt = runtime.provider_options(runtime.TENSORRT_EP, 1, profile)
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True" and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_profile_min_shapes"] == "images:1x3x640x480"
    assert trt["trt_profile_max_shapes"] == "images:16x3x640x480"
    assert runtime.provider_options(runtime.CPU_EP, 0, None) == {}


def test_io_binding_path_matches_plain_run(models: dict[str, Path]) -> None:
    """The GPU branch's code, run with CPU memory: same numbers as a plain run."""
    session = runtime.make_session(models["v5_static4"], [runtime.CPU_EP], threads=1)
    batch = np.zeros((4, 3, SIZE, SIZE), np.float32)
    bound = runtime.run_bound(session, "images", "output0", batch, ("cpu", 0))
    np.testing.assert_array_equal(bound, runtime.run_plain(session, "images", "output0", batch))
    assert bound.shape == (4, 10, 8)


def test_default_threads_follow_affinity() -> None:
    assert runtime.default_threads() == len(os.sched_getaffinity(0))


def test_detector_is_safe_across_threads(models: dict[str, Path]) -> None:
    """The shared letterbox buffer is locked: concurrent callers get their own images' results."""
    detector = Detector(YoloModel(models["v8"], threads=1), max_batch=2)
    alone = [detector.detect([WIDE]), detector.detect([TALL])]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: detector.detect([(WIDE, TALL)[i % 2]]), range(40)))
    assert all(result == alone[i % 2] for i, result in enumerate(results))
