"""What a command costs before it does anything: the modules it imports, the datasets it
loads; and ``gradq status`` over several jobs in one call.

Timings are not asserted here (they are measured by ``benchmarks/cli_latency.py``); what is
checked is their cause: which heavy modules a command imports, and how often a built-in
dataset is made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _cli import invoke, write_spec
from gradq.nn import datasets as ds_mod

# Modules a read command has no use for, each costing 0.1–1 s to import on a small machine.
HEAVY = ("numpy", "scipy", "celery", "kombu", "alembic", "matplotlib", "sklearn", "yaml",
         "mlxtend", "torch")

# Runs one gradq command in a fresh interpreter and writes the top-level packages it
# imported to the file named by argv[1] (stdout belongs to the command).
_PROBE = """
import json, sys
out, args = sys.argv[1], sys.argv[2:]
from gradq.cli.main import main
try:
    main(args)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, f)
"""


def imported_by(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """(exit code, top-level packages imported) of ``gradq ARGS`` in a new interpreter."""
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], env=os.environ,
                          capture_output=True, text=True, timeout=120)
    assert out.exists(), proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    return doc["code"], set(doc["modules"])


@pytest.fixture
def stored_job() -> str:
    """A database with its schema (migrated here, not by the command under test) and a
    queued job in it; returns the job's id."""
    from gradq.service.spec import validate
    from gradq.service.store import create, newjob

    spec = validate({"data": {"dataset": "iris"}})
    job = newjob.NewJob(spec=spec, kind="train", name="probe", seed=0,
                      optimizer=spec["optimizer"], queue="auto")
    return create.create_jobs(job, dataset=None, priority=0, max_attempts=3)[0]


def test_help_imports_no_heavy_module_and_no_database_layer(tmp_path: Path) -> None:
    code, modules = imported_by(tmp_path, "--help")
    assert code == 0
    assert not modules & {*HEAVY, "sqlalchemy"}, modules & {*HEAVY, "sqlalchemy"}


@pytest.mark.parametrize("command", [["ls"], ["ls", "--json"], ["status", "{job}"],
                                     ["status", "{job}", "--json"], ["results", "{job}"],
                                     ["db", "current"]])
def test_read_commands_import_no_heavy_module(tmp_path: Path, stored_job: str,
                                              command: list[str]) -> None:
    code, modules = imported_by(tmp_path, *(a.format(job=stored_job) for a in command))
    assert code == 0
    assert "sqlalchemy" in modules  # the probe did read the database
    assert not modules & set(HEAVY), modules & set(HEAVY)


def test_the_schema_check_agrees_with_alembic() -> None:
    """The start-up check reads the head revision from the version files' text; Alembic's
    own script directory is the reference."""
    from alembic.script import ScriptDirectory
    from gradq.service.store import db

    expected = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head()
    assert db.head_revision() == expected
    engine = db.get_engine()
    db.ensure_schema(engine)
    assert db.current_revision(engine) == expected


def test_head_revision_reads_a_linear_history_and_defers_on_branches(tmp_path: Path) -> None:
    from gradq.service.store.db import _head_from_files

    def write(name: str, body: str) -> None:
        (tmp_path / name).write_text(body)

    write("__init__.py", "")
    write("0001_a.py", 'revision = "0001"\ndown_revision = None\n')
    write("0002_b.py", "revision: str = '0002'\ndown_revision: str | None = '0001'  # b\n")
    assert _head_from_files(tmp_path) == "0002"
    _head_from_files.cache_clear()
    write("0003_c.py", 'revision = "0003"\ndown_revision = "0001"\n')  # a branch: two heads
    assert _head_from_files(tmp_path) is None
    _head_from_files.cache_clear()


# ----------------------------------------------------------------- one load per run
@pytest.fixture
def counted_iris(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time iris is made from its source, an entry here (the per-process memo and the
    disk cache start empty)."""
    calls: list[str] = []
    real = ds_mod._LOADERS["iris"]

    def loader() -> Any:
        calls.append("iris")
        return real()

    monkeypatch.setitem(ds_mod._LOADERS, "iris", loader)
    ds_mod._memo.clear()
    yield calls
    ds_mod._memo.clear()


def test_gradq_run_makes_the_dataset_once_for_client_and_runner(tmp_path: Path,
                                                                counted_iris: list[str],
                                                                gradq_home: Path) -> None:
    spec = write_spec(tmp_path, {"data": {"dataset": "iris"}, "model": {"hidden": [4]},
                                 "training": {"epochs": 1}})
    code, out, err = invoke("run", spec, "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"
    assert counted_iris == ["iris"]  # validated by the client, trained by the runner
    assert (gradq_home / "cache" / "builtin-iris.json").exists()


# ----------------------------------------------------------------- status JOB JOB...
def _two_jobs() -> list[str]:
    from gradq.service.spec import validate
    from gradq.service.store import create, newjob

    spec = validate({"data": {"dataset": "iris"}})
    ids = []
    for name in ("first", "second"):
        job = newjob.NewJob(spec=spec, kind="train", name=name, seed=0,
                          optimizer=spec["optimizer"], queue="auto")
        ids += create.create_jobs(job, dataset=None, priority=0, max_attempts=3)
    return ids


def test_status_of_several_jobs_prints_a_json_list_in_order() -> None:
    a, b = _two_jobs()
    code, out, err = invoke("status", b, a[:8], "--json")
    assert code == 0, err
    docs = json.loads(out)
    assert [d["id"] for d in docs] == [b, a]
    assert [d["name"] for d in docs] == ["second", "first"]
    assert all("progress" in d and d["status"] == "queued" for d in docs)

    code, out, _ = invoke("status", a, "--json")  # one id: the document itself
    assert code == 0 and json.loads(out)["id"] == a


def test_status_of_several_jobs_for_people_shows_each() -> None:
    a, b = _two_jobs()
    code, out, _ = invoke("status", a, b)
    assert code == 0
    assert a in out and b in out and out.count("status") == 2


def test_status_with_one_unknown_id_among_several_is_exit_2_naming_it() -> None:
    a, _ = _two_jobs()
    code, out, err = invoke("status", a, "feedfacefeedface", "--json")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: no job with id 'feedfacefeedface'"]


# ------------------------------------------------------------ gradq run pays for its use
@pytest.mark.parametrize("kind", ["train", "compare"])
def test_gradq_run_imports_no_broker_and_no_scipy_stats(tmp_path: Path, kind: str) -> None:
    # Given a train job, or a comparison (whose report needs the t distribution)
    raw: dict = {"data": {"dataset": "iris"}, "model": {"hidden": [4]},
                 "training": {"epochs": 1}}
    if kind == "compare":
        raw.update({"kind": "compare", "compare": {"optimizers": [{"name": "sgd"},
                                                                  {"name": "adam"}],
                                                   "seeds": 2}})
    spec = write_spec(tmp_path, raw)
    out = tmp_path / "modules.json"
    probe = _PROBE.replace('m.split(".")[0] for m in sys.modules', "m for m in sys.modules")
    # When it runs in a new interpreter, the second time (the first makes the dataset's
    # cache, through scikit-learn, which imports scipy.stats)
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", probe, str(out), "run", str(spec),
                               "--json"], env=os.environ, capture_output=True, text=True,
                              timeout=300)
    assert out.exists(), proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    # Then it trained, without Celery, kombu or scipy.stats (only a pool worker sends)
    assert doc["code"] in (0, None), proc.stderr[-2000:]
    modules = set(doc["modules"])
    assert "gradq.workers.runner" in modules
    assert not {m for m in modules if m.split(".")[0] in ("celery", "kombu")}
    assert "scipy.stats" not in modules
