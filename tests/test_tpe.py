"""``compare.search.method: tpe``: Optuna's TPESampler asked and told in waves; the same
seed gives the same trials; without Optuna it is refused with the install to run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _cli import invoke, write_spec

pytest.importorskip("optuna")

SPACE = {"lr": {"loguniform": [1e-4, 1.0]}, "width": {"choice": [[4], [8, 8]]}}


def test_propose_is_a_function_of_seed_wave_and_values() -> None:
    from gradq.service.experiments.tpe import propose

    first = propose(SPACE, 3, seed=1, wave_number=0, told=[], lower_is_better=True,
                    n_startup=3)
    assert first == propose(SPACE, 3, 1, 0, [], True, 3)
    assert first != propose(SPACE, 3, 2, 0, [], True, 3)
    assert all(s["width"] in ([4], [8, 8]) and 1e-4 <= s["lr"] <= 1 for s in first)
    told = [(s, v) for s, v in zip(first, [0.5, None, 0.2], strict=True)]
    second = propose(SPACE, 3, 1, 1, told, True, 3)
    assert second == propose(SPACE, 3, 1, 1, told, True, 3)
    assert second != propose(SPACE, 3, 1, 1, [(s, 1.0) for s, _ in told], True, 3)


def _spec(tmp_path: Path, **search: Any) -> Path:
    doc = {"kind": "compare", "seed": 3, "data": {"dataset": "iris"},
           "model": {"hidden": [4]}, "training": {"epochs": 2, "batch_size": 32},
           "compare": {"optimizers": [{"name": "sgd", "lr": {"loguniform": [1e-3, 1.0]}},
                                      {"name": "adam", "lr": {"loguniform": [1e-4, 0.1]}}],
                       "seeds": 1, "metric": "val_loss",
                       "search": {"method": "tpe", "trials": 5, "wave": 2, **search}}}
    return write_spec(tmp_path, doc, "tpe.json")


def _trials(home: Path, parent: str) -> list[tuple[str, int, dict[str, Any]]]:
    db = sqlite3.connect(home / "gradq.db")
    out = []
    for (text,) in db.execute("SELECT spec FROM jobs WHERE parent_id = ?", (parent,)):
        s = json.loads(text)
        if s.get("_phase") == "search":
            out.append((s["_arm"], s["_trial"], s["_grid"]))
    return sorted(out, key=lambda x: (x[0], x[1]))


def test_the_same_seed_gives_the_same_trials(tmp_path: Path, gradq_home: Path) -> None:
    # Given the same tpe comparison run twice (waves of 2 of 5 trials per arm)
    reps = []
    for _ in range(2):
        code, out, err = invoke("run", _spec(tmp_path), "--json")
        assert code == 0, err
        reps.append(json.loads(out))
    a, b = (_trials(gradq_home, r["id"]) for r in reps)
    # Then every arm ran its 5 trials, and both runs proposed the same ones
    assert [t[:2] for t in a] == [(arm, t) for arm in sorted({x[0] for x in a})
                                  for t in range(5)]
    assert a == b
    for arm in reps[0]["arms"]:
        assert arm["search"]["method"] == "tpe" and len(arm["search"]["expected_best"]) == 5
        assert "pending" not in arm["search"]
    assert [x["search"]["chosen"] for x in reps[0]["arms"]] == \
        [x["search"]["chosen"] for x in reps[1]["arms"]]


def test_tpe_without_optuna_names_the_install(tmp_path: Path, gradq_home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.service.spec import suite

    monkeypatch.setattr(suite, "optuna_missing", lambda: True)
    code, out, err = invoke("run", _spec(tmp_path))
    assert code == 2 and out == ""
    assert err.strip() == ("error: compare.search.method: tpe uses Optuna's TPESampler, "
                           "which is not installed: pip install 'gradq[tpe]' (or pip "
                           "install optuna)")
    assert not (gradq_home / "gradq.db").exists() or sqlite3.connect(
        gradq_home / "gradq.db").execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


@pytest.mark.parametrize(("search", "line"), [
    ({"pruner": {"successive_halving": {"eta": 2}}},
     "error: compare.search.pruner: successive halving is not combined with tpe"),
    ({"method": "random"}, "error: compare.search.wave: only for method: tpe"),
])
def test_bad_tpe_settings(tmp_path: Path, search: dict[str, Any], line: str) -> None:
    code, _, err = invoke("run", _spec(tmp_path, **search))
    assert code == 2 and err.startswith(line), err
