"""An onnxruntime YOLO network, validated once at load time: input geometry, output layout, class names."""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from framefarm.errors import ModelError
from framefarm.vision import runtime
from framefarm.vision.formats import OutputFormat, class_count, detect_format
from framefarm.vision.runtime import GPU_DEVICE_TYPE, GPU_PROVIDERS, TENSORRT_EP, Device, TensorrtProfile

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (640, 640)
"""Used for dynamic-size exports without `imgsz` metadata; it is the size Ultralytics trains at."""
DEFAULT_MAX_BATCH = 8
"""Largest batch a dynamic-batch model is run with unless told; bounds TensorRT's engine profile."""

IMAGE_INPUT_RANK = 4
IMAGE_CHANNELS = 3
FLOAT16_TYPE = "tensor(float16)"
METADATA_NAMES_KEY = "names"
METADATA_IMGSZ_KEY = "imgsz"
PROBE_BATCH = 1
NAMES_CONTROL_CHARS = frozenset(chr(c) for c in [*range(32), 127]) - {"\t", "\r", "\n"}
MAX_NAMES_BYTES = 1024 * 1024  # COCO's 80 names are 600 bytes; a bigger file is no names file


def _literal(path: Path, key: str, raw: str | None) -> object:
    """A Python-literal metadata value (Ultralytics writes repr()s), or None when absent or unparseable."""
    if raw is None:
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        log.warning("ignoring unparseable %r metadata in %s: %.80s", key, path, raw)
        return None


def _parse_names(path: Path, raw: str | None) -> list[str] | None:
    """Class names from Ultralytics metadata: a python literal, dict {id: name} or a list."""
    value = _literal(path, METADATA_NAMES_KEY, raw)
    if isinstance(value, dict):
        return [str(value[key]) for key in sorted(value)]
    if isinstance(value, list):
        return [str(name) for name in value]
    if value is not None:
        log.warning("ignoring %r metadata in %s that is no list or dict: %.80s", METADATA_NAMES_KEY, path, raw)
    return None


def _parse_imgsz(path: Path, raw: str | None) -> tuple[int, int] | None:
    """The export size from metadata ("[640, 640]" or "640"), the right default for a dynamic-size model."""
    value = _literal(path, METADATA_IMGSZ_KEY, raw)
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    return None


@dataclass(frozen=True)
class Signature:
    """What a session says about the network before anything runs."""

    input_name: str
    input_shape: list[int | str | None]
    input_dtype: type[np.floating]
    output_name: str
    output_shape: list[int | str | None]
    metadata: dict[str, str]


def _signature(path: Path, session: ort.InferenceSession) -> Signature:
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != IMAGE_INPUT_RANK:
        found = [(i.name, i.shape) for i in inputs]
        raise ModelError(f"model {path} must have exactly one 4-D image input, found {found}")
    channels = inputs[0].shape[1]
    if isinstance(channels, int) and channels != IMAGE_CHANNELS:
        raise ModelError(f"model {path} input has {channels} channels, expected {IMAGE_CHANNELS}")
    output = session.get_outputs()[0]
    return Signature(
        input_name=inputs[0].name,
        input_shape=list(inputs[0].shape),
        input_dtype=np.float16 if inputs[0].type == FLOAT16_TYPE else np.float32,
        output_name=output.name,
        output_shape=list(output.shape),
        metadata=dict(session.get_modelmeta().custom_metadata_map),
    )


def _input_size(path: Path, sig: Signature, size: tuple[int, int] | None) -> tuple[int, int]:
    """(height, width): the model's own when fixed, else `size`, else its `imgsz` metadata, else 640x640."""
    height, width = sig.input_shape[2:]
    if isinstance(height, int) and isinstance(width, int):
        if size is not None and tuple(size) != (height, width):
            raise ModelError(f"model {path} has a fixed {height}x{width} input; it cannot run at {size}")
        return height, width
    return tuple(size or _parse_imgsz(path, sig.metadata.get(METADATA_IMGSZ_KEY)) or DEFAULT_INPUT_SIZE)


class YoloModel:
    """An ONNX YOLO network with its input geometry and output layout, ready for batched inference.

    `device`/`device_id` pick onnxruntime providers (see runtime.Device); `format` overrides the
    layout detected from the output shape; `size` sets (height, width) of dynamic-size exports;
    `max_batch` is the largest batch a dynamic-batch model will get (it shapes TensorRT's engine).
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        *,
        device: Device | str = Device.CPU,
        device_id: int = runtime.DEFAULT_DEVICE_ID,
        format: OutputFormat | str = OutputFormat.AUTO,  # shadows the builtin: it is the option's name
        size: tuple[int, int] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        spin: bool = True,
    ) -> None:
        self.path = Path(path)
        self.spin = spin
        self.name = self.path.stem
        if self.path.is_dir():
            raise ModelError(f"model {self.path} is a directory, not a file")
        if not self.path.is_file():  # a FIFO or a device would block or fail inside onnxruntime
            found = self.path.exists()
            raise ModelError(
                f"model {self.path} is not a regular file" if found else f"model file not found: {self.path}"
            )
        self.max_batch = max_batch
        requested = runtime.select_providers(device, ort.get_available_providers())
        self._session, sig = self._open(requested, threads, device_id, size)
        self.providers: list[str] = self._session.get_providers()
        runtime.warn_if_dropped(self.path, requested, self.providers)
        self._device = (GPU_DEVICE_TYPE, device_id) if GPU_PROVIDERS & set(self.providers) else None
        self.input_name, self._output_name = sig.input_name, sig.output_name
        self.input_size: tuple[int, int] = _input_size(self.path, sig, size)
        self.input_dtype: type[np.floating] = sig.input_dtype
        batch = sig.input_shape[0]
        self.fixed_batch: int | None = batch if isinstance(batch, int) else None
        self.output_shape: tuple[int, ...] = self._output_shape(sig.output_shape)
        self.format: OutputFormat = detect_format(self.output_shape, format, sig.metadata)
        self.output_classes: int | None = class_count(self.format, self.output_shape)
        self.metadata_names: list[str] | None = _parse_names(self.path, sig.metadata.get(METADATA_NAMES_KEY))

    def _open(
        self, providers: list[str], threads: int | None, device_id: int, size: tuple[int, int] | None
    ) -> tuple[ort.InferenceSession, Signature]:
        """The session, and the signature it reports.

        TensorRT needs the input's shape range before the session exists, so for it a bare CPU session
        is opened first just to read the signature.
        """
        profile = None
        if TENSORRT_EP in providers:
            sig = _signature(self.path, runtime.make_session(self.path, [runtime.CPU_EP], threads=1, optimise=False))
            if not isinstance(sig.input_shape[0], int):
                height, width = _input_size(self.path, sig, size)
                profile = TensorrtProfile(sig.input_name, height, width, self.max_batch)
        session = runtime.make_session(
            self.path, providers, threads=threads, device_id=device_id, profile=profile, spin=self.spin
        )
        return session, _signature(self.path, session)

    def _output_shape(self, declared: list[int | str | None]) -> tuple[int, ...]:
        """The output shape at this input size: as declared when fully known, else from one probe run.

        Exports often leave the output symbolic (dynamic batch and size); a probe on a blank batch is
        the only way to learn it, and it doubles as the first, slow, warm-up inference.
        """
        if all(isinstance(d, int) for d in declared[1:]):
            return (self.fixed_batch or PROBE_BATCH, *declared[1:])
        blank = np.zeros((self.fixed_batch or PROBE_BATCH, IMAGE_CHANNELS, *self.input_size), self.input_dtype)
        try:
            return tuple(self.run(blank).shape)
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise ModelError(f"model {self.path} fails on a blank {blank.shape} batch: {exc}") from exc

    @property
    def on_gpu(self) -> bool:
        """Whether a GPU provider is active, so runs go through IO binding."""
        return self._device is not None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one NCHW batch and return the first output (the detection tensor), on the host."""
        if self._device is not None:
            return runtime.run_bound(self._session, self.input_name, self._output_name, batch, self._device)
        return runtime.run_plain(self._session, self.input_name, self._output_name, batch)


def load_names(names: str | Path | list[str] | None, model: YoloModel) -> list[str]:
    """Class names from an explicit list, a one-name-per-line file, or else the model's metadata.

    A names file that is a folder, no regular file, not UTF-8 text, a binary (control characters) or empty
    is refused with a ModelError that says which, so ``pipectl -t`` names it instead of passing or crashing.
    """
    if isinstance(names, list):
        return names
    if names is None:
        return model.metadata_names or []
    path = Path(names)
    result = [line.strip() for line in _names_text(path).splitlines() if line.strip()]
    if not result:
        raise ModelError(f"class names file {path} has no names (one class name per line)")
    return result


def _names_text(path: Path) -> str:
    if path.is_dir():
        raise ModelError(f"class names file {path} is a directory")
    if path.exists() and not path.is_file():  # a FIFO would block the read
        raise ModelError(f"class names file {path} is not a regular file")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_NAMES_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read class names file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_NAMES_BYTES:
        raise ModelError(f"class names file {path} is over {MAX_NAMES_BYTES // 1024} KiB: is it a names file?")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ModelError(f"class names file {path} line {line} is not UTF-8 text: is it a names file?") from exc
    bad = next((i for i, c in enumerate(text) if c in NAMES_CONTROL_CHARS), None)
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        raise ModelError(f"class names file {path} line {line} holds control characters: is it a names file?")
    return text
