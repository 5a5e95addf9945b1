"""Aspect-preserving resize to the model input, and the inverse mapping for boxes."""

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
"""Grey used by the YOLO family for letterbox padding; the weights were trained against it."""

_INV_255 = 1.0 / 255.0


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed in the model input, so boxes can be mapped back to it."""

    scale: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map Nx4 x1,y1,x2,y2 boxes from model-input pixels to original-image pixels (unclipped)."""
        boxes = np.asarray(boxes, dtype=np.float32)
        pad = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        return (boxes - pad) / np.float32(self.scale)


def _pad_borders(out: np.ndarray, top: int, left: int, height: int, width: int) -> None:
    """Grey only the strips around the image region; the resize overwrites the rest anyway."""
    out[:top] = PAD_VALUE
    out[top + height :] = PAD_VALUE
    out[top : top + height, :left] = PAD_VALUE
    out[top : top + height, left + width :] = PAD_VALUE


def letterbox(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize a BGR HxWx3 uint8 image into a (height, width) canvas, centred and padded with PAD_VALUE.

    Pass `out` (a preallocated target-sized uint8 buffer, e.g. a row of a batch array) to avoid
    allocating a new canvas per frame.
    """
    target_h, target_w = size
    src_h, src_w = image.shape[:2]
    scale = min(target_h / src_h, target_w / src_w)
    new_w = min(target_w, round(src_w * scale))
    new_h = min(target_h, round(src_h * scale))
    # with odd padding the spare pixel goes right/down; Letterbox records the real offset
    left, top = (target_w - new_w) // 2, (target_h - new_h) // 2

    if out is None:
        out = np.empty((target_h, target_w, 3), dtype=np.uint8)
    elif out.shape != (target_h, target_w, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be a {target_h}x{target_w}x3 uint8 array, got {out.shape} {out.dtype}")
    _pad_borders(out, top, left, new_h, new_w)
    region = out[top : top + new_h, left : left + new_w]
    cv2.resize(image, (new_w, new_h), dst=region, interpolation=cv2.INTER_LINEAR)
    return out, Letterbox(scale=scale, pad_x=float(left), pad_y=float(top))


def to_tensor(images: list[np.ndarray] | np.ndarray, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Turn letterboxed BGR uint8 HxWx3 images into one NCHW RGB 0..1 batch in a single numpy pass."""
    batch = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    tensor = batch[..., ::-1].transpose(0, 3, 1, 2).astype(dtype, order="C")
    tensor *= _INV_255
    return tensor
