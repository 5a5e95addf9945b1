"""onnxruntime at framefarm's edge: which execution providers to ask for, sessions, and running a batch.

A `device` names a wish, not a guarantee: the installed onnxruntime may lack a provider (the CPU-only
wheel has no CUDA), or may list one whose libraries fail to load (onnxruntime-gpu without TensorRT).
Both fall back to the next provider with a warning, so a pipeline written for a GPU host still runs
elsewhere, only slower, and the log says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import onnxruntime as ort

from framefarm.errors import ModelError

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"
GPU_PROVIDERS = frozenset({CUDA_EP, TENSORRT_EP})
"""Providers whose memory is on the GPU: inputs and outputs go through IO binding there."""
GPU_DEVICE_TYPE = "cuda"
"""OrtValue device name for both CUDA and TensorRT providers (TensorRT runs on CUDA memory)."""
DEFAULT_DEVICE_ID = 0
CACHE_DIR_ENV = "FRAMEFARM_TRT_CACHE"
"""Where TensorRT engines are cached; building one takes minutes, so it must survive restarts."""


class Device(StrEnum):
    """Where inference runs; `auto` takes the best provider this onnxruntime offers."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


PROVIDER_CHAINS: dict[Device, tuple[str, ...]] = {
    Device.AUTO: (TENSORRT_EP, CUDA_EP, CPU_EP),
    Device.TENSORRT: (TENSORRT_EP, CUDA_EP, CPU_EP),
    Device.CUDA: (CUDA_EP, CPU_EP),
    Device.CPU: (CPU_EP,),
}
"""Best first; onnxruntime places each node on the first provider in the list that supports it."""


@dataclass(frozen=True)
class TensorrtProfile:
    """Input shapes TensorRT builds its engine for, so growing batches do not trigger rebuilds."""

    input_name: str
    height: int
    width: int
    max_batch: int

    def shapes(self, batch: int) -> str:
        return f"{self.input_name}:{batch}x3x{self.height}x{self.width}"


def default_threads() -> int:
    """The cores this process may use (its CPU affinity, e.g. under taskset or a cgroup cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def trt_cache_dir() -> Path:
    """$FRAMEFARM_TRT_CACHE, else ~/.cache/framefarm/tensorrt (model folders may be read-only)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "framefarm" / "tensorrt"


def select_providers(device: Device | str, available: Sequence[str]) -> list[str]:
    """The providers to ask for, best first, keeping only those this onnxruntime build has.

    A provider that `device` asked for by name and that is missing is logged as a warning with the
    fallback; with `auto` a missing GPU provider is expected and only the choice is logged.
    """
    device = Device(device)
    wanted = PROVIDER_CHAINS[device]
    chosen = [p for p in wanted if p in available] or [CPU_EP]
    missing = [p for p in wanted if p not in available]
    if missing and device is not Device.AUTO:
        log.warning(
            "device %s: %s not in this onnxruntime (available: %s); falling back to %s",
            device.value,
            ", ".join(missing),
            ", ".join(available),
            chosen[0],
        )
    else:
        log.info("device %s: using %s", device.value, chosen[0])
    return chosen


def provider_options(provider: str, device_id: int, profile: TensorrtProfile | None) -> dict[str, str]:
    """onnxruntime options for one provider: the GPU to use and, for TensorRT, fp16 and engine caching."""
    if provider == CUDA_EP:
        return {"device_id": str(device_id)}
    if provider != TENSORRT_EP:
        return {}
    cache = str(trt_cache_dir())
    options = {
        "device_id": str(device_id),
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }
    if profile is not None:
        options["trt_profile_min_shapes"] = profile.shapes(1)
        options["trt_profile_opt_shapes"] = profile.shapes(profile.max_batch)
        options["trt_profile_max_shapes"] = profile.shapes(profile.max_batch)
    return options


def make_session(
    path: Path,
    providers: Sequence[str],
    *,
    threads: int | None = None,
    device_id: int = DEFAULT_DEVICE_ID,
    profile: TensorrtProfile | None = None,
    optimise: bool = True,
    spin: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession on `providers`; any onnxruntime failure becomes a ModelError naming the file."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = threads or default_threads()
    # Spinning idle intra-op threads answer the next parallel region sooner; they also burn cores that other
    # processes could use. Measured with the whole pipeline on 2 cores (bench/README.md), spinning wins.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if TENSORRT_EP in providers:
        trt_cache_dir().mkdir(parents=True, exist_ok=True)
    chain = [(p, provider_options(p, device_id, profile)) for p in providers]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chain)
    except Exception as exc:  # onnxruntime's errors share no base class but Exception
        raise ModelError(f"cannot load model {path}: {exc}") from exc


def warn_if_dropped(path: Path, requested: Sequence[str], active: Sequence[str]) -> None:
    """onnxruntime drops a listed provider whose libraries fail to load; say so instead of running slow."""
    if requested[0] not in active:
        log.warning("model %s: %s failed to start; running on %s", path, requested[0], ", ".join(active))


def run_plain(session: ort.InferenceSession, input_name: str, output_name: str, batch: np.ndarray) -> np.ndarray:
    """One inference with host arrays; right for CPU, where IO binding would only add a wrapper."""
    return session.run([output_name], {input_name: batch})[0]


def run_bound(
    session: ort.InferenceSession,
    input_name: str,
    output_name: str,
    batch: np.ndarray,
    device: tuple[str, int] = (GPU_DEVICE_TYPE, DEFAULT_DEVICE_ID),
) -> np.ndarray:
    """One inference through IO binding: the input is copied to `device` once, the output is left there
    by onnxruntime and copied back once, instead of onnxruntime staging both through its own buffers.

    A binding is made per call so concurrent callers never share one. Works for ("cpu", 0) too, which
    is how it is tested on machines without a GPU.
    """
    device_type, device_id = device
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(batch, device_type, device_id))
    binding.bind_output(output_name, device_type, device_id)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]
