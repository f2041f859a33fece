"""The one place that knows about CuPy: pick the array module, move arrays between devices.

Every other module of ``gradq.nn`` takes ``xp = array_module(x)`` once and writes its
maths on ``xp``; nothing else imports ``cupy`` (STYLE.md, after Chainer's ``backends.cuda``).
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy

_IMPORT_ERROR: str | None = None
try:  # CuPy is optional: a machine without a GPU imports everything cleanly.
    import cupy  # type: ignore[import-not-found]
except Exception as exc:  # ImportError, or a CUDA library that fails to load
    cupy = None
    _IMPORT_ERROR = f"CuPy does not import ({type(exc).__name__}: {exc})"


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return numpy


@lru_cache(maxsize=1)
def gpu_problem() -> str | None:
    """Why no GPU is usable here (None: one is): CuPy missing or failing to import, the
    CUDA runtime's error, or no device. Probed once per process."""
    if cupy is None:
        return _IMPORT_ERROR or "CuPy is not installed"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # a broken driver or runtime: say which
        return f"the CUDA runtime failed ({type(exc).__name__}: {exc})"
    return None if n > 0 else "CUDA sees no device"


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    return gpu_problem() is None


def get_array_module(device: str) -> ModuleType:
    """Resolve a device name (``auto``, ``cuda``, ``cpu``) to ``cupy`` or ``numpy``.

    ``cuda`` without a usable GPU raises ``RuntimeError`` with the reason, rather than
    silently using the CPU; ``auto`` falls back to NumPy (``gpu_problem`` says why).
    """
    if device == "cpu":
        return numpy
    if device == "cuda":
        problem = gpu_problem()
        if problem is not None:
            raise RuntimeError(f"device 'cuda' asked for, but no GPU is usable: {problem}")
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
