"""The machine a benchmark ran on, printed with its figures so numbers are never read without it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import onnxruntime as ort

from framefarm.vision.model import YoloModel


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids() -> list[int]:
    """This process's direct children (the servers a benchmark started, its worker processes)."""
    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                children.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue  # exited meanwhile
    return children


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_name() -> str | None:
    """The GPU's name from nvidia-smi, when there is one to name."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return done.stdout.strip() or None


def machine(model: YoloModel, threads: int) -> str:
    usable = usable_cores()
    lines = [
        f"cpu: {cpu_model()}, {usable} usable cores of {os.cpu_count()}, intra-op threads {threads}",
        f"onnxruntime {ort.__version__}; available providers: {', '.join(ort.get_available_providers())}",
        f"active providers: {', '.join(model.providers)}",
    ]
    gpu = _gpu_name() if model.on_gpu else None
    if gpu:
        lines.append(f"gpu: {gpu}")
    return "\n".join(lines)
