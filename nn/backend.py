"""The one place that knows about CuPy: pick the array module, move arrays between devices.

Every other module of ``gradq.nn`` takes ``xp = array_module(x)`` once and writes its
maths on ``xp``; nothing else imports ``cupy`` (STYLE.md, after Chainer's ``backends.cuda``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

try:  # CuPy is optional: a machine without a GPU imports everything cleanly.
    import cupy  # type: ignore[import-not-found]
except Exception:  # ImportError, or a CUDA library that fails to load
    cupy = None


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return numpy


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(device: str) -> ModuleType:
    """Resolve a device name (``auto``, ``cuda``, ``cpu``) to ``cupy`` or ``numpy``.

    ``cuda`` without a usable GPU raises ``RuntimeError`` rather than silently using the CPU.
    """
    if device == "cpu":
        return numpy
    if device == "cuda":
        if not gpu_available():
            raise RuntimeError("device 'cuda' asked for, but CuPy or a CUDA GPU is not available")
        return cupy
    if device == "auto":
        return cupy if gpu_available() else numpy
    raise ValueError(f"unknown device {device!r}: use auto, cuda or cpu")


def device_name(xp: ModuleType) -> str:
    """A human description of where arrays of ``xp`` live, e.g. ``cuda:0 (cupy)``."""
    if cupy is not None and xp is cupy:
        return f"cuda:{cupy.cuda.Device().id} (cupy)"
    return "cpu (numpy)"


def gpu_name() -> str | None:
    """The current CUDA device's name (e.g. ``NVIDIA H200``), None without a usable GPU."""
    if not gpu_available():
        return None
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props.get("name", b"")
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def to_numpy(x: Any) -> numpy.ndarray:
    """Copy an array to the host (a no-op for NumPy arrays)."""
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return numpy.asarray(x)


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (used by benchmarks and timings only)."""
    if cupy is not None and xp is cupy:
        cupy.cuda.get_current_stream().synchronize()
