"""The stages every pipeline benchmark runs after its input: the yolo processor and an image_files output."""

from __future__ import annotations

import argparse


def detector_and_results(args: argparse.Namespace, yolo_extra: str = "") -> str:
    """The ``processors`` and ``outputs`` sections for ``args`` (model, batch, device, workers, worker_threads);
    ``yolo_extra``: more option lines of the yolo processor."""
    return f"""\
  processors:
    - name: yolo
      alias: detector
      model: {args.model}
      batch: {args.batch}
      device: {args.device}
      workers: {args.workers}
      intra_threads: {args.worker_threads}
{yolo_extra}  outputs:
    - name: image_files
      alias: results
      path: out
      results: {getattr(args, "results", "files")}
"""
