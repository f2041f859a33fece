"""What every benchmark shares: the machine it ran on, interleaved timing, its report.

Each script measures gradq and its reference in one process, repetitions interleaved
(gradq, reference, gradq, …) after a warm-up, and reports medians, so that a slow
moment of a shared machine hits both sides alike. ``report`` prints the figures and, when
the environment variable ``OUT`` names a folder, writes them to ``$OUT/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repetitions: checks that the script runs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: the GPU where CuPy and torch.cuda see one, else the CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per side")
    p.add_argument("--tag", default="", help="suffix of the JSON file: $OUT/<name><tag>.json")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for BLAS and torch alike (default: the libraries' own)")
    return p


def set_threads(n: int | None) -> None:
    """Give BLAS (NumPy's) and torch the same number of CPU threads, when asked."""
    if not n:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def array_module(device: str) -> Any:
    from gradq.nn.backend import get_array_module

    return get_array_module(device)


def on_gpu(xp: Any) -> bool:
    return xp.__name__ == "cupy"


def torch_device(xp: Any) -> str:
    return "cuda" if on_gpu(xp) else "cpu"


def sync(xp: Any) -> None:
    from gradq.nn.backend import synchronize

    synchronize(xp)


def torch_sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------- machine
def machine(xp: Any = np) -> dict[str, Any]:
    """Where the figures come from: CPU, GPU, library versions, thread counts."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads",
                                               "threading_layer", "architecture")}
                        for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        info["blas"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["torch_cuda"] = torch.version.cuda
            info["torch_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    except ImportError:
        info["torch"] = None
    from gradq.nn.backend import cupy

    if cupy is not None:
        info["cupy"] = cupy.__version__
    if on_gpu(xp):
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["cuda_runtime"] = xp.cuda.runtime.runtimeGetVersion()
        info["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -------------------------------------------------------------------------- timing
def interleaved(sides: dict[str, Callable[[], None]], repeats: int, warmup: int = 2
                ) -> dict[str, dict[str, float]]:
    """Time each side ``repeats`` times, interleaved, after ``warmup`` untimed rounds.

    A side is a callable that does one unit of work and returns when it is finished
    (it synchronises its own device). The order rotates every round, so that neither side
    always runs first. Returns per side the median, minimum and maximum in seconds.
    """
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            t = time.perf_counter()
            sides[n]()
            times[n].append(time.perf_counter() - t)
    return {n: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v),
                "repeats": len(v)} for n, v in times.items()}


# -------------------------------------------------------------------------- report
def report(name: str, doc: dict[str, Any], tag: str = "") -> None:
    """Print the document and write it to ``$OUT/<name><tag>.json`` when OUT is set."""
    text = json.dumps(doc, indent=2, default=str)
    print(text)
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / f"{name}{tag}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path}")


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "not met"
