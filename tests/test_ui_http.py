"""The dashboard over HTTP (Starlette's test client): its API is the CLI's ``--json``, it is
read-only and local, it escapes what users wrote, and the service queries behind it page,
filter and downsample correctly. Timings live in benchmarks/ui.py, not here."""

from __future__ import annotations

import csv
import io
import math
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cli import cli, cli_json, invoke, write_spec

HOSTILE = "<img src=x onerror=alert(1)>"
FORMULA = "=HYPERLINK(\"http://evil\",\"x\")"
TRAIN = {"data": {"dataset": "moons"}, "model": {"hidden": [4]},
         "training": {"epochs": 3, "batch_size": 64}, "device": "cpu"}
COMPARE = {**TRAIN, "name": "tiny-compare", "kind": "compare",
           "compare": {"optimizers": ["sgd", "adam"], "seeds": 2}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database for the module: a hostile-named train job, a formula-named one, a
    finished comparison."""
    home = tmp_path_factory.mktemp("ui-http") / "home"
    tmp = home.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADQ_HOME", str(home))
        mp.delenv("GRADQ_DATABASE_URL", raising=False)
        from gradq.service.store.db import dispose_engines

        dispose_engines()
        cli("run", str(write_spec(tmp, {**TRAIN, "name": HOSTILE}, "a.json")), "--json")
        cli("run", str(write_spec(tmp, {**TRAIN, "name": FORMULA, "seed": 1}, "b.json")),
            "--json")
        cli("run", str(write_spec(tmp, COMPARE, "c.json")), "--json")
        cli("run", str(write_spec(tmp, {**TRAIN, "name": "bagged", "regularization":
                                        {"bagging": {"models": 3}}}, "d.json")), "--json")
        dispose_engines()
    return home


@pytest.fixture
def client(home: Path, monkeypatch: pytest.MonkeyPatch):
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    monkeypatch.setenv("GRADQ_HOME", str(home))
    with TestClient(create_app(), base_url="http://127.0.0.1:8765") as c:
        yield c


def ids(kind: str | None = None) -> list[str]:
    args = ["ls"] + (["--kind", kind] if kind else [])
    return [r["id"] for r in cli_json(*args) if r["parent"] is None]


# ------------------------------------------------------------ one source of truth
def test_api_documents_equal_the_cli_json(client) -> None:
    assert client.get("/api/jobs").json() == cli_json("ls")
    assert (client.get("/api/jobs?kind=compare&limit=3").json()
            == cli_json("ls", "--kind", "compare", "--limit", "3"))
    [parent] = ids("compare")
    assert (client.get(f"/api/jobs?parent={parent}").json()
            == cli_json("ls", "--parent", parent))
    for job in ids():
        assert client.get(f"/api/jobs/{job}").json() == cli_json("status", job)
        assert client.get(f"/api/jobs/{job}/results").json() == cli_json("results", job)
    for job in ids("train"):
        assert client.get(f"/api/jobs/{job}/curves").json() == cli_json("curves", job)
        assert (client.get(f"/api/jobs/{job}/curves?metric=val_loss").json()
                == cli_json("curves", job, "--metric", "val_loss"))
    assert client.get(f"/api/jobs/{parent}/report").json() == cli_json("report", parent)
    # a prefix works as on the command line; an unknown id is a 404 with the CLI's message
    assert client.get(f"/api/jobs/{parent[:8]}").json()["id"] == parent
    r = client.get("/api/jobs/ffffffffffff")
    assert r.status_code == 404 and "ffffffffffff" in r.json()["error"]
    assert client.get("/api/jobs?limit=zero").status_code == 400


def test_the_api_filters_like_ls(client) -> None:
    rows = client.get("/api/jobs?name=HYPERLINK").json()
    assert [r["name"] for r in rows] == [FORMULA]
    assert client.get("/api/jobs?name=tiny-COMPARE&kind=compare").json()[0]["kind"] == "compare"
    everything = client.get("/api/jobs?limit=100").json()
    assert (client.get("/api/jobs?limit=2&offset=1").json() == everything[1:3])
    by_name = client.get("/api/jobs?limit=100&sort=name").json()
    assert [r["name"] for r in by_name] == sorted(r["name"] for r in everything)
    assert client.get("/api/jobs?since=1h").json() == everything[:50]
    assert client.get("/api/jobs?since=2999-01-01").json() == []
    assert client.get("/api/jobs?sort=bogus").status_code == 400


def _cells(text: str, header: str) -> list[list[str]]:
    """The rows of the CLI table under the header line that starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip() or not line[:1].strip():
            break
        rows.append([c for c in re.split(r"\s{2,}", line.strip())])
    return rows


def test_the_cli_and_the_dashboard_write_a_report_s_numbers_alike(client) -> None:
    # Given a finished comparison
    [parent] = ids("compare")
    # When the CLI prints its report and the dashboard draws its page
    text = cli("report", parent)
    html = client.get(f"/jobs/{parent}").text
    # Then each pair's n, difference and interval are the same text in both
    pairs = _cells(text, "A ")
    assert pairs
    for a, b, n, diff, ci95, *_ in pairs:
        assert f"<td>{n}</td><td>{diff}</td><td>{ci95}</td>" in html, (a, b)


def test_the_cli_and_the_dashboard_write_a_missing_value_alike(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.service.spec import validate
    from gradq.service.store import create
    from gradq.service.store.newjob import NewJob
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    # Given a queued job: no device, no worker yet
    spec = validate({"data": {"dataset": "iris"}})
    job = NewJob(spec=spec, kind="train", name="waiting", seed=0,
                      optimizer=spec["optimizer"], queue="auto")
    [job_id] = create.create_jobs(job, dataset=None, priority=0, max_attempts=3)
    # When the CLI shows its status and the dashboard its page
    text = cli("status", job_id)
    with TestClient(create_app(), base_url="http://127.0.0.1:8765") as c:
        html = c.get(f"/jobs/{job_id}").text
    # Then both write the one mark for "none", and the optimizer's settings alike
    shown = dict(line.split(None, 1) for line in text.splitlines())
    assert shown["device"] == shown["worker"] == "-"
    assert "<dt>device</dt><dd>-</dd>" in html and "<dt>worker</dt><dd>-</dd>" in html
    optimizer = cli("results", job_id).split("optimizer", 1)[1].splitlines()[0].strip()
    assert "amsgrad=False" in optimizer
    assert f"<dt>optimizer</dt><dd>{optimizer}</dd>" in html


# ------------------------------------------------------------------- security
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(client, method: str) -> None:
    for path in ("/", "/api/jobs", f"/api/jobs/{ids()[0]}"):
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert client.head("/").status_code == 200


def test_a_foreign_host_is_refused(client) -> None:
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
        r = client.get("/api/jobs", headers={"host": host})
        assert r.status_code == 400, host
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765"):
        assert client.get("/api/jobs", headers={"host": host}).status_code == 200, host


def test_allow_host_adds_a_name(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    monkeypatch.setenv("GRADQ_HOME", str(home))
    with TestClient(create_app("0.0.0.0", ["gradq.lan"]), base_url="http://gradq.lan") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"host": "other.lan"}).status_code == 400


def test_headers_forbid_inline_script_and_cors(client) -> None:
    for path in ("/", f"/jobs/{ids()[0]}", "/api/jobs", "/static/app.js"):
        r = client.get(path, headers={"origin": "http://evil.example"})
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
        assert "unsafe-eval" not in csp
        assert not any(h.startswith("access-control-") for h in r.headers)
        assert r.headers["x-content-type-options"] == "nosniff"


def test_pages_have_no_inline_script(client) -> None:
    import re

    for job in ids():
        html = client.get(f"/jobs/{job}").text
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/static/' in tag, tag
        assert not re.search(r"<[a-z][^<>]*\son[a-z]+\s*=", html)  # no handler attribute


def test_what_users_wrote_is_escaped(client) -> None:
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    listing = client.get("/").text
    assert escaped in listing and HOSTILE not in listing
    job = next(r["id"] for r in cli_json("ls") if r["name"] == HOSTILE)
    page = client.get(f"/jobs/{job}").text
    assert escaped in page and HOSTILE not in page
    overlay = client.get(f"/overlay?job={job}").text
    assert HOSTILE not in overlay and "&lt;img" in overlay


def test_error_text_is_escaped_and_its_passwords_hidden(client) -> None:
    from gradq.service.experiments.compare import expand
    from gradq.service.spec import validate
    from gradq.service.status import JobStatus
    from gradq.service.store import create, leases, writes

    [job] = create.create_jobs(expand(validate({**TRAIN, "name": "broken"})), dataset=None,
                             priority=0, max_attempts=3)
    lease = leases.claim(job, "test")
    writes.finish(lease, JobStatus.FAILED, error="<script>alert(2)</script> at "
                "postgresql://u:hunter2@db/x", traceback="Traceback\n  <b>bold</b>")
    html = client.get(f"/jobs/{job}").text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "hunter2" not in html and "u:***@db" in html
    doc = client.get(f"/api/jobs/{job}").json()  # the CLI's document, read the same way
    assert "hunter2" not in doc["error"] + doc["traceback"] and doc == cli_json("status", job)
    create.delete_jobs([job])  # the module's database as the other tests expect it


def test_a_password_in_the_database_url_is_never_shown(pg_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from gradq.service.store.db import upgrade
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    # trust authentication: the password is ignored by the server, but it is in the URL
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@")
    monkeypatch.setenv("GRADQ_DATABASE_URL", url)
    upgrade()
    with TestClient(create_app(), base_url="http://127.0.0.1") as c:
        page = c.get("/").text
        assert "s3cret-pw" not in page and "postgres:***@" in page
        assert c.get("/api/jobs").json() == []


# ------------------------------------------------------------------------ CSV
def test_csv_cells_that_would_run_as_formulas_are_neutralised(client) -> None:
    job = next(r["id"] for r in cli_json("ls") if r["name"] == FORMULA)
    r = client.get(f"/jobs/{job}/curves.csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["job", "name", "label", "metric", "step", "epoch", "time_s", "value"]
    assert all(row[1] == "'" + FORMULA for row in rows[1:]) and len(rows) > 10
    assert all(not row[2].startswith(("=", "+", "-", "@")) for row in rows[1:])
    points = sum(len(m["step"]) for m in cli_json("curves", job)["metrics"].values())
    assert len(rows) - 1 == points  # every point, not a downsampled copy
    from gradq.ui.pages import neutralise

    for bad in ("=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1"):
        assert neutralise(bad) == "'" + bad
    assert neutralise(-0.5) == -0.5 and neutralise("loss") == "loss"


def test_parameters_are_served_by_job_id(client) -> None:
    job = next(r["id"] for r in cli_json("ls") if r["name"] == HOSTILE)
    r = client.get(f"/jobs/{job}/model.npz")
    assert r.status_code == 200
    assert r.content == queries_artifact(job)  # the bytes `gradq export` writes
    with np.load(io.BytesIO(r.content)) as z:
        assert "W0" in z.files
    [parent] = ids("compare")
    assert client.get(f"/jobs/{parent}/model.npz").status_code == 400
    assert client.get("/jobs/..%2F..%2Fetc%2Fpasswd/model.npz").status_code in (400, 404)


def queries_artifact(job: str) -> bytes:
    from gradq.service.store.queries import artifact

    return artifact(job, "model")


# --------------------------------------------------------------------- pages
def test_the_comparison_page_shows_the_whole_report(client) -> None:
    [parent] = ids("compare")
    report = cli_json("report", parent)
    html = client.get(f"/jobs/{parent}").text
    for arm in report["arms"]:
        assert (arm.get("label") or arm["optimizer"]) in html
        for run in arm["runs"]:
            assert f'href="/jobs/{run}"' in html  # the children's table links each run
    assert "Paired differences" in html and "95% interval" in html
    assert 'id="compare-charts"' in html and 'data-metric="test_loss"' in html
    assert "partial" not in html.split('id="report"')[1].split("</section>")[0]


def test_the_report_is_rendered_in_the_shape_stats_is_adding(monkeypatch, client) -> None:
    """``pairs`` with p and Holm's p, arm labels, gaps, a search and seeds all show."""
    from gradq.service.experiments import report as report_mod

    [parent] = ids("compare")
    old = report_mod.build_report(parent)
    arms = [{**a, "label": f"arm-{i}", "gap": {"mean": 0.01, "ci95": [0.0, 0.02]},
             "search": {"space": {"optimizer.lr": {"loguniform": [1e-4, 1e-1]}},
                        "method": "random", "trials": 3, "pruned": 1,
                        "chosen": {"optimizer.lr": 0.003}, "budget": {"epochs": 9},
                        "expected_best": [0.5, 0.4, 0.35]}}
            for i, a in enumerate(old["arms"])]
    new = {**{k: v for k, v in old.items() if k != "paired"}, "arms": arms,
           "pairs": [{"a": "arm-0", "b": "arm-1", "n": 2, "diff": 0.1, "ci95": [0.05, 0.15],
                      "p": 0.0123, "p_holm": 0.0246, "significant": True}],
           "seeds": {"tune": [100], "eval": [0, 1]}, "shapes": {"arm-0": "2-4-2"}}
    monkeypatch.setattr(report_mod, "build_report", lambda job_id: new)
    html = client.get(f"/jobs/{parent}").text
    for text in ("arm-0", "arm-1", "p (Holm)", "0.0246", "0.0123", "Search", "random",
                 "loguniform", "Seeds", "2-4-2", "gap (test − train)", 'data-search="1"'):
        assert text in html, text


def test_a_pair_that_survives_holm_names_its_better_arm(monkeypatch, client) -> None:
    """The pairs table says which arm of a significant pair is better, from the sign of
    a − b and the metric's direction: the report's pairs have no ``better`` key."""
    from gradq.service.experiments import report as report_mod

    [parent] = ids("compare")
    old = report_mod.build_report(parent)

    def pair(a: str, b: str, diff: float, significant: bool) -> dict[str, Any]:
        return {"a": a, "b": b, "n": 3, "diff": diff, "ci95": [diff - 0.01, diff + 0.01],
                "p": 0.001, "p_holm": 0.003 if significant else 0.2,
                "significant": significant}

    pairs = [pair("sgd", "adam", 0.25, True), pair("adam", "rms", -0.5, True),
             pair("sgd", "rms", 0.125, False)]

    def cells(lower_is_better: bool) -> list[str]:
        new = {**old, "lower_is_better": lower_is_better, "pairs": pairs}
        monkeypatch.setattr(report_mod, "build_report", lambda job_id: new)
        html = client.get(f"/jobs/{parent}").text
        table = html.split('<table class="num pairs">')[1].split("</table>")[0]
        return [re.sub(r"<[^>]+>", "", row.split("<td>")[-1]).strip()
                for row in table.split("<tr")[2:]]

    assert cells(True) == ["yes (adam better)", "yes (adam better)", "no"]
    assert cells(False) == ["yes (sgd better)", "yes (rms better)", "no"]


def test_a_bagging_job_shows_its_members_against_the_ensemble(client) -> None:
    job = next(r["id"] for r in cli_json("ls") if r["name"] == "bagged")
    rep = cli_json("report", job)
    html = client.get(f"/jobs/{job}").text
    assert "Bagging: 3 members against their ensemble" in html
    from gradq.ui.pages import fmt

    for key in ("v", "c", "predicted_error", "observed_error"):
        assert f"<dd>{fmt(rep[key])}</dd>" in html, key
    assert html.count("<td>member ") == 3


def test_a_running_comparison_is_marked_partial(client) -> None:
    from gradq.service.experiments.compare import expand
    from gradq.service.spec import validate
    from gradq.service.store import create

    ids_ = create.create_jobs(expand(validate({**COMPARE, "name": "unfinished"})), dataset=None,
                            priority=0, max_attempts=3)
    html = client.get(f"/jobs/{ids_[0]}").text
    assert f"partial: {len(ids_) - 1} of {len(ids_) - 1} runs not finished" in html
    assert 'data-live="1"' in html
    create.delete_jobs(ids_)


def test_serve_warns_when_bound_beyond_loopback(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import webbrowser

    import uvicorn
    from gradq.ui import app

    monkeypatch.setenv("GRADQ_HOME", str(home))
    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: calls.append(kw))
    monkeypatch.setattr(webbrowser, "open", lambda url: calls.append(url))
    app.serve("127.0.0.1", 8765)
    assert "warning" not in capsys.readouterr().err
    app.serve("0.0.0.0", 8766)
    assert "warning: gradq ui is bound to 0.0.0.0" in capsys.readouterr().err
    assert [c["host"] for c in calls] == ["127.0.0.1", "0.0.0.0"]


def test_the_jobs_page_pages_filters_and_looks_up_ids(client) -> None:
    html = client.get("/").text
    assert "page 1 of 1" in html
    job = ids("train")[0]
    found = client.get(f"/?id={job[:6]}").text
    assert f'href="/jobs/{job}"' in found and found.count('name="job" value=') == 1
    assert client.get("/?id=xyz").status_code == 400
    assert client.get("/?status=failed").text.count('name="job" value=') == 0
    assert client.get("/?page=0").status_code == 400


def test_the_overlay_page_labels_jobs_by_name_arm_and_seed(client) -> None:
    [parent] = ids("compare")
    kids = [r["id"] for r in cli_json("ls", "--parent", parent)][:2]
    html = client.get("/overlay?" + "&".join(f"job={k}" for k in kids)).text
    for k in kids:
        doc = cli_json("status", k)
        assert f'data-label="tiny-compare · {doc["arm"]} · seed {doc["seed"]}"' in html
    assert client.get("/overlay").status_code == 400


# -------------------------------------------------------- the service queries
def _create_and_log(values: np.ndarray, start: int) -> str:
    """A running job that logged ``values`` as train_loss at steps start, start+1, …"""
    from gradq.service.experiments.compare import expand
    from gradq.service.spec import validate
    from gradq.service.store import create, leases, writes

    [job_id] = create.create_jobs(expand(validate({**TRAIN, "name": "long"})), dataset=None,
                                priority=0, max_attempts=3)
    lease = leases.claim(job_id, "test")
    rows = [("train_loss", start + i, (start + i) / 100, (start + i) * 1e-3, float(v))
            for i, v in enumerate(values)]
    for k in range(0, len(rows), 20000):
        writes.log(lease, rows[k:k + 20000], {"step": start + len(values)})
    return job_id


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_downsampling_keeps_the_first_last_lowest_and_highest_points(
        database: str, request: pytest.FixtureRequest) -> None:
    from gradq.service.store import queries

    if database == "postgresql":
        request.getfixturevalue("pg_url")
        from gradq.service.store.db import upgrade

        upgrade()

    rng = np.random.default_rng(0)
    n = 12_345
    y = np.exp(-np.arange(n) / 3000) + 0.01 * rng.standard_normal(n)
    y[777], y[9000] = 5.0, -3.0  # spikes that a stride would skip
    y[4321] = math.nan
    job = _create_and_log(y, start=0)
    full = queries.curves(job)["metrics"]["train_loss"]
    assert len(full["step"]) == n
    doc = queries.curves(job, max_points=400)["metrics"]["train_loss"]
    steps = doc["step"]
    assert len(steps) <= 400 + 100 and steps == sorted(set(steps))  # + one nan per bucket
    assert steps[0] == 0 and steps[-1] == n - 1
    assert 777 in steps and 9000 in steps and 4321 in steps
    # every bucket's own extremes are kept, with their epoch and time; a non-finite value
    # is kept beside them (so that a divergence shows), never instead of the lowest
    width = (n - 1) // 100 + 1
    for b in range(0, n, width):
        seg = y[b:b + width]
        finite = np.where(np.isfinite(seg))[0]
        assert b + finite[np.argmin(seg[finite])] in steps
        assert b + finite[np.argmax(seg[finite])] in steps
        assert b in steps and min(b + width, n) - 1 in steps
    i = steps.index(777)
    assert doc["value"][i] == 5.0 and doc["epoch"][i] == 7.77
    assert math.isnan(doc["value"][steps.index(4321)])
    # a short series, or max_points above its length, is returned whole
    assert queries.curves(job, max_points=n)["metrics"]["train_loss"] == full


def test_curves_of_the_cli_and_the_api_are_one_document_for_the_same_max_points() -> None:
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    # Given a curve of 5,000 points, longer than the API's default of 2,000
    rng = np.random.default_rng(1)
    job = _create_and_log(np.exp(-np.arange(5_000) / 900) + 0.01 * rng.standard_normal(5_000),
                          start=0)
    with TestClient(create_app(), base_url="http://127.0.0.1:8765") as c:
        # When both are asked for the same number of points, Then they answer alike
        api = c.get(f"/api/jobs/{job}/curves").json()
        assert api == cli_json("curves", job, "--max-points", "2000")
        assert len(api["metrics"]["train_loss"]["step"]) < 2_100
        assert (c.get(f"/api/jobs/{job}/curves?max_points=300").json()
                == cli_json("curves", job, "--max-points", "300"))
        every = cli_json("curves", job)  # the CLI's default stays every point
        assert len(every["metrics"]["train_loss"]["step"]) == 5_000
        assert c.get(f"/api/jobs/{job}/curves?max_points=0").json() == every
    code, out, err = invoke("curves", job, "--max-points", "3")
    assert code == 2 and not out and "--max-points: 3 is below the minimum 4" in err


def test_after_step_returns_only_what_is_new() -> None:
    from gradq.service.store import queries

    job = _create_and_log(np.linspace(1, 0, 50), start=0)
    doc = queries.curves(job, after_step=44)["metrics"]["train_loss"]
    assert doc["step"] == [45, 46, 47, 48, 49]
    assert queries.curves(job, after_step=49)["metrics"] == {}


def test_paging_ten_thousand_jobs(client, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    """Pages are disjoint and complete; the page asks the database for one page only."""
    import sqlalchemy as sa
    from gradq.service.status import JobStatus
    from gradq.service.store import queries
    from gradq.service.store.db import session_scope
    from gradq.service.store.models import Job

    monkeypatch.setenv("GRADQ_HOME", str(tmp_path / "many"))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with session_scope() as s:
        s.execute(sa.insert(Job), [
            {"id": f"{i:032x}", "kind": "train", "name": f"job-{i:05d}",
             "status": JobStatus.SUCCEEDED if i % 3 else JobStatus.FAILED, "spec": "{}",
             "seed": 0, "optimizer": "{}", "queue": "cpu", "priority": 0, "attempts": 1,
             "max_attempts": 3, "lease_token": 0, "cancel_requested": False, "progress": "{}",
             "created_at": t0 + timedelta(seconds=i)} for i in range(10_000)])
    assert queries.count_jobs() == 10_000
    assert queries.count_jobs(status="failed") == 3334
    seen = []
    for page in range(1, 201):
        r = client.get(f"/?page={page}")
        assert r.status_code == 200
        seen += [line.split('value="')[1][:32] for line in r.text.splitlines()
                 if 'name="job" value=' in line]
    assert len(seen) == len(set(seen)) == 10_000
    assert seen[0] == f"{9999:032x}"  # newest first
    assert "page 200 of 200" in client.get("/?page=200").text
    assert [r["name"] for r in queries.list_jobs(limit=3, offset=10, sort="name")] == [
        "job-00010", "job-00011", "job-00012"]
    assert queries.list_jobs(limit=1, since=t0 + timedelta(seconds=9998.5),
                             sort="-created")[0]["name"] == "job-09999"


def test_pages_read_while_a_writer_holds_the_sqlite_file(client) -> None:
    """`gradq run` in one terminal and `gradq ui` in another: no "database is locked"."""
    import sqlalchemy as sa
    from gradq.service.store.db import get_engine

    job = ids("train")[0]
    started, done = threading.Event(), threading.Event()

    def writer() -> None:
        with get_engine().begin() as conn:
            conn.execute(sa.text("UPDATE jobs SET attempts = attempts WHERE id = :id"),
                         {"id": job})
            started.set()
            done.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    started.wait(10)
    try:
        for path in ("/", f"/jobs/{job}", f"/api/jobs/{job}/curves"):
            assert client.get(path).status_code == 200
    finally:
        done.set()
        t.join()


# ---------------------------------------------------------------------- CLI
def test_ls_name_and_since(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_HOME", str(home))
    assert [r["name"] for r in cli_json("ls", "--name", "hyperlink")] == [FORMULA]
    assert len(cli_json("ls", "--since", "1d")) == len(cli_json("ls"))
    assert cli_json("ls", "--since", "2999-01-01T00:00") == []
    code, out, err = invoke("ls", "--since", "yesterday")
    assert code == 2 and "--since" in err and "yesterday" in err and out == ""


def test_curves_png_legend_names_jobs_by_name_arm_and_seed(home: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import matplotlib.figure

    monkeypatch.setenv("GRADQ_HOME", str(home))
    [parent] = ids("compare")
    kids = [r["id"] for r in cli_json("ls", "--parent", parent)][:2]
    legends: list[list[str]] = []
    save = matplotlib.figure.Figure.savefig

    def spy(fig: Any, *args: Any, **kwargs: Any) -> Any:
        legends.extend([t.get_text() for t in ax.get_legend().get_texts()]
                       for ax in fig.axes if ax.get_legend())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    cli("curves", *kids, "--png", str(tmp_path / "c.png"))
    want = {f"tiny-compare · {cli_json('status', k)['arm']} · seed "
            f"{cli_json('status', k)['seed']}" for k in kids}
    assert legends and all(set(labels) == want for labels in legends)


def test_ui_refuses_a_bad_port() -> None:
    code, _, err = invoke("ui", "--port", "70000")
    assert code == 2 and "70000" in err



def test_a_bug_is_a_server_error_not_bad_input(home: Path, client: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the service's own errors are 4xx: a bad filter is the user's (400, named), a
    KeyError from a bug is a 500, never passed off as bad input."""
    from gradq.service.store import queries
    from gradq.ui.app import create_app
    from starlette.testclient import TestClient

    bad = client.get("/api/jobs?status=bogus")
    assert bad.status_code == 400 and "status" in bad.json()["error"]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug in a query")

    monkeypatch.setattr(queries, "list_jobs", broken)
    with TestClient(create_app(), base_url="http://127.0.0.1:8765",
                    raise_server_exceptions=False) as c:
        assert c.get("/api/jobs").status_code == 500
        assert c.get("/").status_code == 500
