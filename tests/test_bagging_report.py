"""`gradq report` on a bagging job: the book's predicted ensemble error beside the observed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from gradq.cli.main import main


def _run(runner: CliRunner, *args: str) -> dict:
    res = runner.invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_bagging_report_recomputes_from_members(tmp_path: Path) -> None:
    # Given a bagged MLP of three members on iris
    spec = tmp_path / "bag.yaml"
    spec.write_text("data: {dataset: iris}\nmodel: {hidden: [8]}\n"
                    "regularization: {bagging: {models: 3}}\n"
                    "optimizer: {name: adam, lr: 0.01}\ntraining: {epochs: 5, batch_size: 16}\n")
    runner = CliRunner()
    job = _run(runner, "run", str(spec), "--json")["id"]
    # When its report is read
    rep = _run(runner, "report", job, "--json")
    # Then it lists every member and the ensemble, and the book's identity holds:
    # E[(mean ε)²] = (1/k)v + ((k−1)/k)c for the empirical moments
    k = rep["models"]
    assert k == 3 and len(rep["members"]) == 3
    assert abs(rep["predicted_error"] - (rep["v"] / k + (k - 1) / k * rep["c"])) < 1e-12
    assert abs(rep["predicted_error"] - rep["observed_error"]) < 1e-10
    members = [m["test_error"] for m in rep["members"]]
    assert abs(rep["mean_member_error"] - np.mean(members)) < 1e-15
    # the ensemble is no worse than its average member (c ≤ v)
    assert rep["observed_error"] <= rep["mean_member_error"] + 1e-12
    # and the table names both figures
    text = runner.invoke(main, ["report", job]).output
    assert "predicted ensemble error" in text and "observed" in text


def test_report_of_a_plain_train_job_is_a_usage_error(tmp_path: Path) -> None:
    spec = tmp_path / "t.yaml"
    spec.write_text("data: {dataset: iris}\nmodel: {hidden: []}\ntraining: {epochs: 1}\n")
    runner = CliRunner()
    job = _run(runner, "run", str(spec), "--json")["id"]
    res = runner.invoke(main, ["report", job])
    assert res.exit_code == 2
    assert "without bagging" in res.stderr and len(res.stderr.strip().splitlines()) == 1
