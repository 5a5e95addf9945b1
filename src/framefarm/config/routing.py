"""Tag/match routing: which queue a frame goes to next, compiled once from the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

MIN_STORE_SIDE = 32  # frames nobody reads are still stored (a frame is what a message points to), this small


@dataclass(frozen=True)
class Stage:
    alias: str
    match: str
    side: int | None = None  # the longest frame side it needs (0: it reads no frame; None: the whole frame)
    raw: bool = False  # an output that also takes the frames before detection (ModuleKind.takes_raw_frames)

    def covers(self, tag: str) -> bool:
        return fnmatchcase(tag, self.match)


@dataclass(frozen=True)
class Routes:
    """A frame tagged T visits every processor whose match covers T, in file order, then every such output."""

    processors: tuple[Stage, ...]
    outputs: tuple[Stage, ...]

    def first_hop(self, tag: str) -> list[str]:
        return self.after(None, tag)

    def after(self, processor: str | None, tag: str) -> list[str]:
        """Queues that follow ``processor`` (None = the input) for frames tagged ``tag``."""
        start = 0
        if processor is not None:
            start = next(i for i, stage in enumerate(self.processors) if stage.alias == processor) + 1
        for stage in self.processors[start:]:
            if stage.covers(tag):
                return [stage.alias]
        return self.outputs_for(tag)

    def last_processor(self, tag: str) -> str | None:
        """The processor whose work on ``tag``'s frames comes last: their results are ready after it."""
        covering = [stage.alias for stage in self.processors if stage.covers(tag)]
        return covering[-1] if covering else None

    def outputs_for(self, tag: str) -> list[str]:
        return [stage.alias for stage in self.outputs if stage.covers(tag)]

    def taps(self, tag: str) -> list[str]:
        """Outputs that take ``tag``'s frames before detection too (none when no processor takes the tag: its
        outputs get the frames as they are anyway)."""
        if self.last_processor(tag) is None:
            return []
        return [stage.alias for stage in self.outputs if stage.raw and stage.covers(tag)]

    def store_side(self, tag: str) -> int | None:
        """The longest side a frame tagged ``tag`` needs to be stored with: what its route's stages need at most
        (see ModuleKind.frame_side); None when one of them needs the whole frame."""
        sides = [s.side for s in (*self.processors, *self.outputs) if s.covers(tag)]
        if any(side is None for side in sides):
            return None
        return max([MIN_STORE_SIDE, *(side for side in sides if side is not None)])

    def to_json(self, *, sides: bool = True) -> dict[str, list[list[Any]]]:
        """The routes as a module's snapshot keeps them. Only inputs use the sides and raw flags: without them, a
        stage whose side changed (a new model) restarts the inputs on reload, not every module."""

        def fields(stage: Stage) -> list[Any]:
            return [stage.alias, stage.match, *([stage.side, stage.raw] if sides else [])]

        return {"processors": [fields(s) for s in self.processors], "outputs": [fields(s) for s in self.outputs]}

    @classmethod
    def from_json(cls, data: dict[str, list[list[Any]]]) -> Routes:
        return cls(
            processors=tuple(Stage(*fields) for fields in data["processors"]),
            outputs=tuple(Stage(*fields) for fields in data["outputs"]),
        )
