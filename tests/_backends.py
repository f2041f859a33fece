"""Backend parametrization shared by the ``nn`` tests: NumPy always, CuPy where a GPU is.

Usage in a test module (pytest collects the fixture by its name, ``xp``)::

    from _backends import xp_fixture

    xp = xp_fixture()

    def test_something(xp): ...

Kept out of ``conftest.py`` on purpose: modules opt in by importing it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from gradq.nn.backend import get_array_module, gpu_available

BACKENDS = [
    pytest.param("cpu", id="numpy"),
    pytest.param(
        "cuda",
        id="cupy",
        marks=pytest.mark.skipif(not gpu_available(), reason="CuPy or a CUDA GPU is not available"),
    ),
]


def xp_fixture(name: str = "xp") -> Any:
    """A fixture, registered as ``name``, yielding ``numpy`` and then ``cupy``."""

    @pytest.fixture(params=BACKENDS, name=name)
    def _xp(request: pytest.FixtureRequest) -> ModuleType:
        return get_array_module(request.param)

    return _xp
