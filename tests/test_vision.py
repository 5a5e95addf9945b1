"""Vision helpers against hand-made numbers and the real yolov3-tiny COCO model on real photos."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from framefarm.errors import ModelError
from framefarm.message import FrameMessage
from framefarm.results import yolo_text
from framefarm.vision.decode import decode_yolov8, detections_for
from framefarm.vision.detections import Detection
from framefarm.vision.detector import Detector
from framefarm.vision.draw import draw_detections
from framefarm.vision.formats import OutputFormat
from framefarm.vision.letterbox import PAD_VALUE, Letterbox, letterbox, to_tensor
from framefarm.vision.model import YoloModel, load_names

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parents[1] / "media"
MODEL_PATH = ROOT / "models" / "yolov3-tiny-coco.onnx"
NAMES_PATH = ROOT / "models" / "coco.names"
CONF, IOU, MAX_DET = 0.25, 0.45, 300
SURE = 0.5
"""Detections this confident must survive any batch size; weaker ones may flicker across the threshold."""
SAME_OBJECT_IOU = 0.5
BATCH_SIZES = (1, 2, 4, 8)

# photo -> class names that must all be found; a tuple means any one of them will do
EXPECTED = {
    "dog.jpg": ["dog", ("car", "truck")],
    "person.jpg": ["person"],
    "horses.jpg": ["horse"],
    "eagle.jpg": ["bird"],
}


# ---------------------------------------------------------------- letterbox


def test_letterbox_geometry_and_inverse() -> None:
    image = np.random.default_rng(0).integers(0, 256, (576, 768, 3), dtype=np.uint8)
    boxed, lb = letterbox(image, (416, 416))
    assert boxed.shape == (416, 416, 3) and boxed.dtype == np.uint8
    assert lb == Letterbox(scale=416 / 768, pad_x=0.0, pad_y=(416 - 312) / 2)
    assert (boxed[:52] == PAD_VALUE).all() and (boxed[52 + 312 :] == PAD_VALUE).all()
    assert not (boxed[52 : 52 + 312] == PAD_VALUE).all()

    original = np.array([[125.0, 219.0, 382.0, 518.0]])
    in_input = original * lb.scale + [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]
    np.testing.assert_allclose(lb.to_original(in_input), original, atol=1e-4)


def test_letterbox_pads_left_and_right_for_tall_images() -> None:
    image = np.zeros((400, 201, 3), dtype=np.uint8)  # 209 px wide once scaled: odd padding of 207
    boxed, lb = letterbox(image, (416, 416))
    assert (lb.scale, lb.pad_x, lb.pad_y) == (416 / 400, 103.0, 0.0)  # the real left offset, not 103.5
    assert (boxed[:, :103] == PAD_VALUE).all() and (boxed[:, 312:] == PAD_VALUE).all()
    assert (boxed[:, 103:312] == 0).all()


def test_letterbox_writes_into_out_buffer() -> None:
    image = np.random.default_rng(1).integers(0, 256, (576, 768, 3), dtype=np.uint8)
    batch = np.zeros((2, 416, 416, 3), dtype=np.uint8)
    boxed, _ = letterbox(image, (416, 416), out=batch[1])
    assert np.shares_memory(boxed, batch)
    np.testing.assert_array_equal(batch[1], letterbox(image, (416, 416))[0])
    assert not batch[0].any()
    with pytest.raises(ValueError):
        letterbox(image, (416, 416), out=np.zeros((320, 320, 3), dtype=np.uint8))


def test_to_tensor_is_nchw_rgb_0_to_1() -> None:
    bgr = np.zeros((2, 4, 6, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # blue
    tensor = to_tensor(list(bgr))
    assert tensor.shape == (2, 3, 4, 6) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert (tensor[:, 2] == 1.0).all() and (tensor[:, :2] == 0.0).all()
    assert to_tensor(bgr, dtype=np.float16).dtype == np.float16


# ---------------------------------------------------------------- detections


def test_detection_yolo_json_and_lines() -> None:
    det = Detection(class_id=16, confidence=0.82912345, box=(125.0, 219.0, 382.0, 518.0))
    np.testing.assert_allclose(det.yolo(768, 576), (253.5 / 768, 368.5 / 576, 257 / 768, 299 / 576))
    assert det.to_json(["x"] * 16 + ["dog"], 768, 576) == {
        "class_id": 16,
        "class_name": "dog",
        "confidence": 0.8291,
        "box": [125.0, 219.0, 382.0, 518.0],
        "yolo": [0.330078, 0.639757, 0.334635, 0.519097],
    }
    assert det.to_json([], 768, 576)["class_name"] == "16"
    other = Detection(class_id=0, confidence=0.5, box=(0.0, 0.0, 768.0, 576.0))
    # The YOLO txt every output writes is made from these JSON records (confidence at their 4 decimals).
    frame = {"stream": "t", "input": "i", "source": "dog.jpg", "seq": 1, "captured_at": 0.0}
    message = FrameMessage(**frame, width=768, height=576, key="k", format="jpeg")
    found = message.model_copy(update={"detections": [d.to_json([], 768, 576) for d in (det, other)]})
    assert yolo_text(found) == (
        "16 0.330078 0.639757 0.334635 0.519097 0.829100\n0 0.500000 0.500000 1.000000 1.000000 0.500000\n"
    )
    assert yolo_text(message) == ""


# ---------------------------------------------------------------- decode


def _raw_output(anchors: list[tuple[float, float, float, float, int, float]], classes: int = 3) -> np.ndarray:
    """A [1, 4+classes, A] output from (cx, cy, w, h, class_id, score) rows."""
    out = np.zeros((1, 4 + classes, len(anchors)), dtype=np.float32)
    for i, (cx, cy, w, h, class_id, score) in enumerate(anchors):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + class_id, i] = score
    return out


def test_decode_nms_keeps_best_of_same_class() -> None:
    out = _raw_output([(100, 100, 50, 50, 1, 0.6), (102, 101, 50, 50, 1, 0.9), (300, 300, 20, 20, 2, 0.1)])
    [(boxes, scores, class_ids)] = decode_yolov8(out, CONF, IOU, MAX_DET)
    np.testing.assert_allclose(boxes, [[77, 76, 127, 126]])
    np.testing.assert_allclose(scores, [0.9])
    assert class_ids.tolist() == [1]


def test_decode_nms_is_class_wise_sorted_and_capped() -> None:
    out = _raw_output([(100, 100, 50, 50, 0, 0.6), (102, 101, 50, 50, 1, 0.9), (300, 300, 20, 20, 2, 0.7)])
    [(boxes, scores, class_ids)] = decode_yolov8(out, CONF, IOU, MAX_DET)
    assert class_ids.tolist() == [1, 2, 0]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6])
    assert boxes.shape == (3, 4) and boxes.dtype == np.float32
    [(_, capped, capped_ids)] = decode_yolov8(out, CONF, IOU, max_det=2)
    assert capped_ids.tolist() == [1, 2] and len(capped) == 2


def test_decode_empty_and_detections_for_clips() -> None:
    out = np.concatenate([_raw_output([(10, 10, 5, 5, 0, 0.1)]), _raw_output([(10, 10, 40, 40, 2, 0.8)])])
    (empty_boxes, empty_scores, _), (boxes, scores, class_ids) = decode_yolov8(out, CONF, IOU, MAX_DET)
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)
    lb = Letterbox(scale=0.5, pad_x=0.0, pad_y=8.0)
    assert detections_for(empty_boxes, empty_scores, empty_scores.astype(int), lb, 100, 50) == []
    [det] = detections_for(boxes, scores, class_ids, lb, 100, 50)
    assert det.class_id == 2 and det.confidence == pytest.approx(0.8)
    assert det.box == (0.0, 0.0, 60.0, 44.0)  # (-10, -28, 30, 28) / 0.5 after removing pad, then clipped


# ---------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def model() -> YoloModel:
    return YoloModel(MODEL_PATH, threads=2)


@pytest.fixture(scope="module")
def names(model: YoloModel) -> list[str]:
    return load_names(NAMES_PATH, model)


def test_model_attributes(model: YoloModel) -> None:
    assert model.name == "yolov3-tiny-coco"
    assert model.input_name == "images"
    assert model.input_size == (416, 416)
    assert model.input_dtype is np.float32
    assert model.fixed_batch is None
    assert model.metadata_names is None
    assert model.format is OutputFormat.YOLOV8 and model.output_shape == (1, 84, 2535)
    assert model.output_classes == 80 and model.providers == ["CPUExecutionProvider"] and not model.on_gpu


def test_load_names(model: YoloModel, names: list[str]) -> None:
    assert len(names) == 80 and names[0] == "person" and names[16] == "dog"
    assert load_names(["a", "b"], model) == ["a", "b"]
    assert load_names(None, model) == []


def _detect(model: YoloModel, images: list[np.ndarray]) -> list[list[Detection]]:
    """Letterbox into one batch buffer, run once, decode and map back, as the pipeline does."""
    buffer = np.empty((len(images), *model.input_size, 3), dtype=np.uint8)
    boxes = [letterbox(image, model.input_size, out=buffer[i])[1] for i, image in enumerate(images)]
    decoded = decode_yolov8(model.run(to_tensor(buffer, model.input_dtype)), CONF, IOU, MAX_DET)
    return [
        detections_for(*result, lb, image.shape[1], image.shape[0])
        for result, lb, image in zip(decoded, boxes, images, strict=True)
    ]


def _assert_same(alone: list[Detection], batched: list[Detection]) -> None:
    """Batched and single runs may differ only by float noise."""
    assert [d.class_id for d in alone] == [d.class_id for d in batched]
    np.testing.assert_allclose([d.box for d in alone], [d.box for d in batched], atol=0.05)
    np.testing.assert_allclose([d.confidence for d in alone], [d.confidence for d in batched], atol=1e-4)


def test_real_photos_batched_and_alone_agree(model: YoloModel, names: list[str]) -> None:
    photos = list(EXPECTED)
    images = [cv2.imread(str(ASSETS / photo)) for photo in photos]
    batched = _detect(model, images)
    for photo, image, detections in zip(photos, images, batched, strict=True):
        _assert_same(_detect(model, [image])[0], detections)
        found = {names[d.class_id] for d in detections}
        for wanted in EXPECTED[photo]:
            options = wanted if isinstance(wanted, tuple) else (wanted,)
            assert found & set(options), f"{photo}: none of {options} in {found}"
        height, width = image.shape[:2]
        for det in detections:
            x1, y1, x2, y2 = det.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and det.confidence >= CONF


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _assert_confident_found(reference: list[Detection], other: list[Detection], where: str) -> None:
    for det in reference:
        if det.confidence >= SURE:
            same = [o for o in other if o.class_id == det.class_id and _iou(o.box, det.box) >= SAME_OBJECT_IOU]
            assert same, f"{where}: {det} has no match in {other}"


def test_detector_results_do_not_depend_on_batch_size(model: YoloModel) -> None:
    """8 photos through max_batch 1, 2, 4 and 8: every confident detection is found every time."""
    images = [cv2.imread(str(ASSETS / photo)) for photo in EXPECTED] * 2
    runs = {size: Detector(model, conf=CONF, iou=IOU, max_batch=size).detect(images) for size in BATCH_SIZES}
    reference = runs[1]
    assert all(any(d.confidence >= SURE for d in dets) for dets in reference)
    for size, results in runs.items():
        assert len(results) == len(images)
        for i, (ref, got) in enumerate(zip(reference, results, strict=True)):
            _assert_confident_found(ref, got, f"image {i}, batch {size}")
            _assert_confident_found(got, ref, f"image {i}, batch {size} vs 1")


def test_draw_detections_returns_annotated_copy(names: list[str]) -> None:
    image = cv2.imread(str(ASSETS / "dog.jpg"))
    before = image.copy()
    det = Detection(class_id=16, confidence=0.83, box=(125.0, 219.0, 382.0, 518.0))
    drawn = draw_detections(image, [det], names)
    np.testing.assert_array_equal(image, before)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    assert not np.array_equal(drawn[219:518, 125:128], image[219:518, 125:128])  # left edge of the box


# ---------------------------------------------------------------- model errors


def test_model_error_for_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=re.escape(str(missing))):
        YoloModel(missing)


def test_model_error_for_non_onnx_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model\x00\xff" * 10)
    with pytest.raises(ModelError, match=re.escape(str(garbage))) as info:
        YoloModel(garbage)
    assert info.value.__cause__ is not None
