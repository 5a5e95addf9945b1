"""A thin onnxruntime wrapper that validates a YOLO network once, at load time."""

import ast
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from framefarm.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (640, 640)
"""Used for dynamic-size exports; it is the size Ultralytics trains and exports at."""

IMAGE_INPUT_RANK = 4
IMAGE_CHANNELS = 3
FLOAT16_TYPE = "tensor(float16)"
METADATA_NAMES_KEY = "names"


def _session(path: Path, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no base class but Exception
        raise ModelError(f"cannot load model {path}: {exc}") from exc


def _parse_names(path: Path, raw: str | None) -> list[str] | None:
    """Class names from Ultralytics metadata: a python literal, dict {id: name} or a list."""
    if raw is None:
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, dict):
        return [str(value[key]) for key in sorted(value)]
    if isinstance(value, list):
        return [str(name) for name in value]
    log.warning("ignoring unparseable %r metadata in %s: %.80s", METADATA_NAMES_KEY, path, raw)
    return None


def _dim(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


class YoloModel:
    """An ONNX YOLO network with its input geometry, ready for batched CPU inference."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        self._session = _session(self.path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != IMAGE_INPUT_RANK:
            found = [(i.name, i.shape) for i in inputs]
            raise ModelError(f"model {self.path} must have exactly one 4-D image input, found {found}")
        batch, channels, height, width = inputs[0].shape
        if isinstance(channels, int) and channels != IMAGE_CHANNELS:
            raise ModelError(f"model {self.path} input has {channels} channels, expected {IMAGE_CHANNELS}")
        self.input_name: str = inputs[0].name
        self.input_size: tuple[int, int] = (
            _dim(height, DEFAULT_INPUT_SIZE[0]),
            _dim(width, DEFAULT_INPUT_SIZE[1]),
        )
        self.input_dtype: type[np.floating] = np.float16 if inputs[0].type == FLOAT16_TYPE else np.float32
        self.fixed_batch: int | None = batch if isinstance(batch, int) else None
        output = self._session.get_outputs()[0]
        self._output_name: str = output.name
        self.output_classes: int | None = (
            output.shape[1] - 4 if len(output.shape) == 3 and isinstance(output.shape[1], int) else None
        )
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.metadata_names: list[str] | None = _parse_names(self.path, metadata.get(METADATA_NAMES_KEY))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one NCHW batch and return the first output (the detection tensor)."""
        return self._session.run([self._output_name], {self.input_name: batch})[0]


def load_names(names: str | Path | list[str] | None, model: YoloModel) -> list[str]:
    """Class names from an explicit list, a one-name-per-line file, or else the model's metadata."""
    if isinstance(names, list):
        return names
    if names is None:
        return model.metadata_names or []
    try:
        text = Path(names).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read class names file {names}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]
