"""Output ``video_file``: each stream recorded as H.264 files, cut into segments, named by a strftime pattern.

Matroska (``.mkv``) and fragmented MP4 (``.mp4``: a fragment per keyframe, the index up front) are written as
they grow, so a file cut off by a crash or a kill -9 plays up to its last fragment or cluster. A quit closes
every file properly. Old files go by age and total size (``retention``), oldest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
from pydantic import Field

from ..config import registry
from ..config.registry import CheckContext, FolderUse
from ..config.types import Duration
from ..config.yamlpos import Loc
from .encoder import Encoding
from .paths import TAG, fill, fixed_part, is_template
from .retention import RetentionOptions, Sweeper
from .video import TICKS, Shot, VideoOptions, VideoOutput

DEFAULT_SEGMENT_S = 300.0
FILE_REORDER_MS = 5000  # detectors on a busy host can hold one frame back for seconds; a file loses nothing
CLUSTER_MS = 1000  # a kill -9 loses at most about this much of an mkv (and an mp4 its last keyframe interval)
CONTAINERS = {
    ".mkv": ("matroska", {"cluster_time_limit": str(CLUSTER_MS), "flush_packets": "1"}),
    ".mp4": ("mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}),
}


class VideoFileOptions(VideoOptions):
    name: Literal["video_file"] = Field(description="Record each stream as H.264 video files (mkv or mp4).")
    path: Path = Field(
        description="Each segment's file: .mkv or .mp4, with {tag} and strftime codes of its first frame's capture "
        "time filled in (%% for a %); without {tag}, the files go to a folder per tag beside the name."
    )
    reorder_ms: int = Field(
        FILE_REORDER_MS,
        ge=0,
        description="How long a frame waits for an earlier one that is late (ms): a file can wait, a frame "
        "dropped as late is gone from the recording.",
    )
    segment: Duration = Field(DEFAULT_SEGMENT_S, gt=0, description="Length of one file (of video time).")
    retention: RetentionOptions = Field(
        default_factory=RetentionOptions, description="Remove old files: by age and by the folder's total size."
    )

    @property
    def root(self) -> Path:
        return fixed_part(self.path.parent)

    def file(self, tag: str, captured_at: float) -> Path:
        """``path`` filled in for a segment of ``tag`` starting with a frame captured at ``captured_at``."""
        template = self.path if TAG in str(self.path) else self.path.parent / TAG / self.path.name
        return Path(fill(template, tag, captured_at))


@registry.outputs.register
class VideoFile(VideoOutput[VideoFileOptions]):
    @classmethod
    def check(cls, options: VideoFileOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        yield from super().check(options, ctx)
        if options.path.suffix.lower() not in CONTAINERS:
            yield ("path",), f"{options.path.name} must end in .mkv or .mp4 (the containers a cut-off file plays from)"
        folder = ctx.resolve(options.root)
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            yield ("path",), f"{existing} is not a folder, so {folder} cannot be created"

    @classmethod
    def folders(cls, options: VideoFileOptions, ctx: CheckContext) -> Iterator[FolderUse]:
        if not is_template(options.path.parent) and TAG not in options.path.name:
            for tag in ctx.tags:
                yield FolderUse(("path",), ctx.resolve(options.path.parent) / tag, writes=True)
            return
        yield FolderUse(("path",), ctx.resolve(options.root), writes=True, tree=True)

    def setup(self) -> None:
        super().setup()
        self.sweeper = Sweeper(self.ctx.resolve(self.options.root), self.options.retention)
        self.sweeper.start()

    def teardown(self) -> None:
        super().teardown()
        self.sweeper.stop()

    def open_container(self, tag: str, shot: Shot) -> av.container.OutputContainer:
        path = self.free_name(self.ctx.resolve(self.options.file(tag, shot.captured_at)))
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt, options = CONTAINERS[path.suffix.lower()]
        return av.open(str(path), "w", format=fmt, options=options)

    def segment_over(self, encoding: Encoding, pts: int) -> bool:
        return encoding.first_pts is not None and pts - encoding.first_pts >= self.options.segment * TICKS

    @staticmethod
    def free_name(path: Path) -> Path:
        """``path``, or ``<stem>-1<suffix>``, ``-2``... when a file of that name exists (two segments within a
        second of a pattern that names seconds)."""
        candidate, number = path, 0
        while candidate.exists():
            number += 1
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        return candidate
