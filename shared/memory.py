"""System report and memory monitoring.

On CUDA the monitor reads the caching allocator's peaks (allocated and reserved); on CPU it reads
the process's peak resident set (VmHWM), which Linux lets a process reset by writing 5 to
/proc/self/clear_refs, so each epoch gets its own peak.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import os
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

KEY_PACKAGES = ("torch", "torchvision", "transformers", "segment-anything", "monai", "peft", "librosa",
                "lion-pytorch", "torchmetrics", "numpy", "wandb", "tensorboard")

MB = 1024.0**2


def _meminfo() -> dict[str, float]:
    info = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            info[key] = float(value.split()[0]) * 1024  # kB -> bytes
    except OSError:
        pass
    return info


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def system_report(path: str | os.PathLike = ".") -> dict[str, Any]:
    meminfo = _meminfo()
    disk = shutil.disk_usage(path)
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            gpus.append({"index": index, "name": props.name, "total_gb": total / 1024**3,
                         "free_gb": free / 1024**3, "capability": f"{props.major}.{props.minor}",
                         "bf16": torch.cuda.is_bf16_supported()})
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "ram_total_gb": meminfo.get("MemTotal", 0.0) / 1024**3,
        "ram_available_gb": meminfo.get("MemAvailable", 0.0) / 1024**3,
        "disk_free_gb": disk.free / 1024**3,
        "disk_total_gb": disk.total / 1024**3,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": gpus,
        "packages": {name: _package_version(name) for name in KEY_PACKAGES},
    }


def format_system_report(report: dict[str, Any]) -> str:
    lines = [
        f"Python {report['python']} on {report['platform']}",
        f"CPU cores: {report['cpu_count']}   RAM: {report['ram_available_gb']:.1f} / {report['ram_total_gb']:.1f} GB free",
        f"Disk: {report['disk_free_gb']:.1f} / {report['disk_total_gb']:.1f} GB free",
        f"CUDA: {'available' if report['cuda_available'] else 'not available'}"
        + (f" (CUDA {report['cuda_version']}, cuDNN {report['cudnn_version']})" if report["cuda_available"] else ""),
    ]
    for gpu in report["gpus"]:
        lines.append(f"  GPU {gpu['index']}: {gpu['name']}, {gpu['free_gb']:.1f} / {gpu['total_gb']:.1f} GB free, "
                     f"compute {gpu['capability']}, bf16 {'yes' if gpu['bf16'] else 'no'}")
    versions = ", ".join(f"{k} {v}" for k, v in report["packages"].items() if v)
    missing = [k for k, v in report["packages"].items() if not v]
    lines.append(f"Packages: {versions}")
    if missing:
        lines.append(f"Not installed: {', '.join(missing)}")
    return "\n".join(lines)


def _read_status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


class MemoryMonitor:
    """Peak memory since the last `reset_peak()`: GPU allocated/reserved on CUDA, RSS on CPU."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass  # not Linux, or not permitted: the peak is then since process start

    def peak(self) -> dict[str, float]:
        if self.device.type == "cuda":
            return {"peak_gpu_allocated_mb": torch.cuda.max_memory_allocated(self.device) / MB,
                    "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved(self.device) / MB}
        peak_kb = _read_status_kb("VmHWM")
        if peak_kb is None:
            import resource

            peak_kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return {"peak_rss_mb": peak_kb / 1024.0}

    def current(self) -> dict[str, float]:
        if self.device.type == "cuda":
            return {"gpu_allocated_mb": torch.cuda.memory_allocated(self.device) / MB}
        rss_kb = _read_status_kb("VmRSS")
        return {"rss_mb": (rss_kb or 0.0) / 1024.0}


def saved_activation_bytes(fn):
    """Run `fn()` and return (bytes of activations autograd keeps for backward, fn's result).

    Counts each storage once and leaves out the parameters (leaf tensors that require grad, and
    views of them such as the transposed weight a linear layer saves). This
    is the memory that gradient checkpointing trades for recomputation, measurable on CPU where
    the process RSS is dominated by loaded libraries and the allocator's caching.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        root = tensor._base if tensor._base is not None else tensor
        if not (root.is_leaf and root.requires_grad):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return sum(storages.values()), result


@contextlib.contextmanager
def cpu_threads(count: int = 1) -> Iterator[None]:
    """Run with `count` intra-op CPU threads, restoring the previous number afterwards. Tiny models'
    ops last microseconds: on a small shared CPU extra threads only spin and contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
