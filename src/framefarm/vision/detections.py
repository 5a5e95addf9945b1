"""Detection records in original-frame pixels, and their JSON / YOLO-txt serialisations."""

from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE_DECIMALS = 4
BOX_DECIMALS = 1
YOLO_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object; `box` is x1, y1, x2, y2 in original-frame pixels."""

    class_id: int
    confidence: float
    box: tuple[float, float, float, float]

    def scaled(self, factor: float) -> "Detection":
        """The same detection with its box multiplied by ``factor`` (a pre-shrunk frame back to original)."""
        if factor == 1.0:
            return self
        x1, y1, x2, y2 = self.box
        return Detection(self.class_id, self.confidence, (x1 * factor, y1 * factor, x2 * factor, y2 * factor))

    def yolo(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Centre x, centre y, width, height normalised to 0..1, as YOLO label files expect."""
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)

    def to_json(self, names: Sequence[str], width: int, height: int) -> dict:
        """A JSON-ready dict with rounded numbers, so result files stay small and stable."""
        name = names[self.class_id] if 0 <= self.class_id < len(names) else str(self.class_id)
        return {
            "class_id": self.class_id,
            "class_name": name,
            "confidence": round(float(self.confidence), CONFIDENCE_DECIMALS),
            "box": [round(float(v), BOX_DECIMALS) for v in self.box],
            "yolo": [round(float(v), YOLO_DECIMALS) for v in self.yolo(width, height)],
        }
