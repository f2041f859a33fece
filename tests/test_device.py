"""Where a job trains when it asked for a GPU (docs/settings.md, GRADQ_DEVICE): with no
usable GPU, ``auto`` falls back to NumPy and says why, ``cuda`` fails with the reason, and
``gradq worker --gpus`` shows the probe's error. No GPU is needed: a fake ``cupy`` package
on the path fails to import the way a broken CUDA install does."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _cli import invoke, write_spec

BROKEN = "libcuda.so.1: cannot open shared object file: No such file or directory"
SPEC = {"data": {"dataset": "iris"}, "model": {"hidden": [4]}, "training": {"epochs": 2},
        "device": "auto"}


@pytest.fixture
def broken_cuda(tmp_path: Path) -> dict[str, str]:
    """The environment of a process whose ``import cupy`` fails like a broken install."""
    pkg = tmp_path / "fake" / "cupy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise ImportError({BROKEN!r})\n")
    path = os.pathsep.join(p for p in (str(pkg.parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def gradq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradq.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("gpus", ["all", "0"])
def test_worker_gpus_shows_the_probes_error_and_exits_3(broken_cuda: dict[str, str],
                                                        gpus: str) -> None:
    out = gradq(broken_cuda, "worker", "--gpus", gpus)
    assert out.returncode == 3, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert BROKEN in line and "--cpu" in line and out.stdout == ""


def test_auto_without_a_usable_gpu_trains_on_the_cpu_and_records_why(
        broken_cuda: dict[str, str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    out = gradq({**broken_cuda, "GRADQ_DEVICE": "auto"}, "run", str(spec), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "succeeded" and doc["device"] == "cpu (numpy)"
    assert BROKEN in doc["extra"]["device_note"]
    assert doc["extra"]["device_note"].startswith("device auto: no usable GPU")


def test_cuda_without_a_usable_gpu_fails_with_the_reason_and_never_trains(
        broken_cuda: dict[str, str], tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    out = gradq({**broken_cuda, "GRADQ_DEVICE": "cuda"}, "run", str(spec), "--json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "failed" and BROKEN in doc["error"]
    assert "no GPU is usable" in doc["error"]
    assert doc["device"] is None and doc["final"] is None  # nothing ran on the CPU
    code, curves, _ = invoke("curves", doc["id"], "--json")
    assert code == 0 and json.loads(curves)["metrics"] == {}


def test_the_worker_warns_of_its_fallback_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.service import submit
    from gradq.service.store import queries
    from gradq.workers import runner

    # Given a worker whose probe finds no usable GPU, and two jobs that ask for auto
    monkeypatch.setattr(runner, "gpu_problem", lambda: f"CuPy does not import ({BROKEN})")
    monkeypatch.setattr(runner, "_warned_fallback", False)
    ids = [submit.create(submit.prepare(write_spec(tmp_path, {**SPEC, "seed": s},
                                                   f"s{s}.json")))[0] for s in (0, 1)]
    # When it runs both
    with caplog.at_level(logging.WARNING, logger="gradq"):
        for job in ids:
            assert runner.execute(job, worker="w", device="auto") == "succeeded"
    # Then each result says why, and the log says it once
    notes: list[Any] = [queries.result(j)["extra"]["device_note"] for j in ids]
    assert all(BROKEN in n for n in notes)
    warned = [r for r in caplog.records if "falls back to the CPU" in r.getMessage()]
    assert len(warned) == 1 and BROKEN in warned[0].getMessage()
