"""The dashboard in a real browser: Selenium drives Debian's chromium (headless, offline)
against ``gradq ui`` started as a subprocess on a database that holds a finished
comparison, a job that logs new points while the test watches, and a hostile job name.

Outside CI the tests skip where chromium, chromedriver or selenium is missing; with
``CI=true`` they never skip. Screenshots of each page are saved under pytest's tmp dir
(``GRADQ_SCREENSHOTS=DIR`` puts them there instead).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli import cli_json, write_spec

HOSTILE = "<img src=x onerror=alert(1)>"
TRAIN = {"data": {"dataset": "moons"}, "model": {"hidden": [4]},
         "training": {"epochs": 3, "batch_size": 64}, "device": "cpu"}
COMPARE = {**TRAIN, "name": "browser-compare", "kind": "compare",
           "compare": {"optimizers": ["sgd", "momentum", "adam"], "seeds": 3}}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _need_browser() -> None:
    missing = [n for n, ok in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, and CI=true requires the browser tests")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class World:
    """What the server shows, and a handle to make the live job log more points."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = ""
        self.compare = self.hostile = self.live = ""
        self.lease: Any = None
        self.next_step = 0

    def log_points(self, n: int) -> None:
        """The live job logs ``n`` more steps of train_loss and val_loss, as a worker does."""
        from gradq.service.store import writes

        rows = []
        for step in range(self.next_step, self.next_step + n):
            rows += [("train_loss", step, step / 10, step * 0.01, 2.0 / (1 + step)),
                     ("val_loss", step, step / 10, step * 0.01, 2.2 / (1 + step))]
        self.next_step += n
        writes.log(self.lease, rows, {"epoch": self.next_step // 10, "epochs": 100,
                                    "step": self.next_step, "steps": 1000})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    _need_browser()
    home = tmp_path_factory.mktemp("ui-browser") / "home"
    w = World(home)
    port = _free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADQ_HOME", str(home))
        mp.delenv("GRADQ_DATABASE_URL", raising=False)
        from gradq.service.experiments.compare import expand
        from gradq.service.spec import validate
        from gradq.service.store import create, leases
        from gradq.service.store.db import dispose_engines

        dispose_engines()
        tmp = home.parent
        w.compare = cli_json("run", str(write_spec(tmp, COMPARE, "c.json")))["id"]
        w.hostile = cli_json("run", str(write_spec(tmp, {**TRAIN, "name": HOSTILE},
                                                    "h.json")))["id"]
        [w.live] = create.create_jobs(expand(validate({**TRAIN, "name": "live-job"})),
                                    dataset=None, priority=0, max_attempts=3)
        w.lease = leases.claim(w.live, "browser-test")
        w.log_points(30)
        env = {**os.environ, "GRADQ_HOME": str(home)}
        env.pop("GRADQ_DATABASE_URL", None)
        gradq = shutil.which("gradq") or sys.executable
        argv = [gradq] if gradq != sys.executable else [sys.executable, "-m", "gradq.cli.main"]
        proc = subprocess.Popen([*argv, "ui", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        w.url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(w.url + "/api/jobs", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        pytest.fail(f"gradq ui did not start: {proc.stderr.read()}")
                    time.sleep(0.2)
            yield w
        finally:
            proc.terminate()
            proc.wait(10)
            dispose_engines()


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = os.environ.get("GRADQ_SCREENSHOTS")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser: Any, world: World, shots: Path, monkeypatch: pytest.MonkeyPatch,
         request: pytest.FixtureRequest) -> Iterator[Callable[[str], Any]]:
    """Open a path; afterwards save a full-page screenshot and check the console: no
    errors, no Content-Security-Policy violations, no alert."""
    monkeypatch.setenv("GRADQ_HOME", str(world.home))
    opened: list[str] = []

    def open_(path: str) -> Any:
        browser.get(world.url + path)
        opened.append(path)
        return browser

    yield open_
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = browser.switch_to.alert.text
        pytest.fail(f"an alert ran: {text!r}")
    except NoAlertPresentException:
        pass
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(max(height + 40, 800), 6000))
    browser.save_screenshot(str(shots / f"{request.node.name}.png"))
    browser.set_window_size(1400, 1000)
    logs = browser.get_log("browser")
    bad = [e for e in logs if e["level"] == "SEVERE" or "Content Security Policy" in
           e["message"] or "Refused to" in e["message"]]
    assert not bad, bad


def wait_for(browser: Any, script: str, timeout: float = 15) -> Any:
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def traces(browser: Any, chart: str) -> list[dict[str, Any]]:
    return browser.execute_script(
        "return document.getElementById(arguments[0]).data.map(t => "
        "({name: t.name, band: t.meta === 'band', n: t.x.length}))", chart)


# ----------------------------------------------------------------------- pages
def test_the_comparison_page_draws_every_arm_with_its_band(page: Any, world: World) -> None:
    b = page(f"/jobs/{world.compare}")
    report = cli_json("report", world.compare)
    arms = [a.get("label") or a["optimizer"] for a in report["arms"]]
    wait_for(b, "document.getElementById('final-interval') && "
                "document.getElementById('final-interval').data")
    for chart in ("mean-test_loss", "mean-val_loss", "mean-train_loss"):
        t = wait_for(b, f"document.getElementById('{chart}') && "
                        f"document.getElementById('{chart}').data")
        t = traces(b, chart)
        assert sorted(x["name"] for x in t if not x["band"]) == sorted(arms)
        assert sorted(x["name"] for x in t if x["band"]) == sorted(f"{a} 95% band" for a in arms)
        assert all(x["n"] > 2 for x in t)
    assert sorted(x["name"] for x in traces(b, "final-interval")) == sorted(arms)
    assert b.find_element("id", "report").text.count("95% interval") >= 1
    kids = b.find_elements("css selector", "#children a[href^='/jobs/']")
    assert len(kids) == len(cli_json("ls", "--parent", world.compare))


def test_the_live_job_grows_without_a_reload_and_keeps_its_zoom(page: Any,
                                                                world: World) -> None:
    b = page(f"/jobs/{world.live}")
    wait_for(b, "document.getElementById('chart-loss') && "
                "document.getElementById('chart-loss').data")
    assert sorted(t["name"] for t in traces(b, "chart-loss")) == ["train_loss", "val_loss"]
    before = traces(b, "chart-loss")[0]["n"]
    b.execute_script("window.__sameDocument = true;"
                     "Plotly.relayout('chart-loss', {'xaxis.range': [5, 25]})")
    world.log_points(20)
    wait_for(b, f"document.getElementById('chart-loss').data[0].x.length > {before}")
    assert traces(b, "chart-loss")[0]["n"] == before + 20
    assert b.execute_script("return window.__sameDocument") is True  # no reload
    assert b.execute_script("return document.getElementById('chart-loss').layout.xaxis.range"
                            ) == [5, 25]
    # the log switch turns the value axis to log
    b.find_element("css selector", ".ctl-log").click()
    wait_for(b, "document.getElementById('chart-loss').layout.yaxis.type === 'log'")
    # smoothing redraws the same traces, smoothed
    raw = b.execute_script("return document.getElementById('chart-loss').data[0].y.slice()")
    b.execute_script("const r = document.querySelector('.ctl-ema'); r.value = 0.9;"
                     "r.dispatchEvent(new Event('input'))")
    smooth = b.execute_script("return document.getElementById('chart-loss').data[0].y")
    assert len(smooth) == len(raw) and smooth[-1] > raw[-1]
    # epoch on the x axis
    b.execute_script("const x = document.querySelector('.ctl-x'); x.value = 'epoch';"
                     "x.dispatchEvent(new Event('change'))")
    chart = "document.getElementById('chart-loss')"
    assert b.execute_script(f"return {chart}.layout.xaxis.title.text") == "epoch"
    assert b.execute_script(f"return {chart}.data[0].x[12]") == 1.2  # step 12, at 10 steps an epoch
    # a PNG of the chart, made in the page (plotly's toImage) under the CSP
    png = b.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"Plotly.toImage({chart}, {{format: 'png', width: 600, height: 300}})"
        ".then(done, e => done('error: ' + e))")
    assert png.startswith("data:image/png;base64,"), png[:80]


def test_a_hostile_name_is_shown_as_text_and_runs_nothing(page: Any, world: World) -> None:
    b = page(f"/jobs/{world.hostile}")
    assert b.find_element("css selector", "h1 .name").text == HOSTILE
    assert b.execute_script("return document.querySelectorAll('img').length") == 0
    wait_for(b, "document.getElementById('chart-loss') && "
                "document.getElementById('chart-loss').data")
    b = page("/")
    assert HOSTILE in [e.text for e in b.find_elements("css selector", "td.name")]
    assert b.execute_script("return document.querySelectorAll('main img').length") == 0


def test_picked_jobs_are_overlaid_with_their_labels(page: Any, world: World) -> None:
    b = page(f"/?parent={world.compare}")
    boxes = b.find_elements("css selector", "input[name=job]")[:2]
    picked = [x.get_attribute("value") for x in boxes]
    for x in boxes:
        x.click()
    b.find_element("id", "overlay").click()
    wait_for(b, "document.getElementById('overlay-train_loss') && "
                "document.getElementById('overlay-train_loss').data")
    names = [t["name"] for t in traces(b, "overlay-train_loss")]
    want = [f"browser-compare · {cli_json('status', j)['arm']} · seed "
            f"{cli_json('status', j)['seed']}" for j in picked]
    assert sorted(names) == sorted(want)


def test_the_jobs_page_refreshes_itself_unless_paused(page: Any, world: World) -> None:
    b = page("/?name=live-job")
    assert b.find_element("tag name", "body").get_attribute("data-live") == "1"
    bar = "document.querySelector('progress[value]').getAttribute('value')"
    first = float(wait_for(b, bar))
    b.execute_script("window.__sameDocument = true")
    world.log_points(10)
    wait_for(b, f"parseFloat({bar}) > {first}", timeout=10)  # swapped in, not reloaded
    assert b.execute_script("return window.__sameDocument") is True
    b.find_element("id", "pause").click()
    assert b.execute_script("return localStorage.getItem('gradq.pause')") == "1"
    paused = float(b.execute_script("return " + bar))
    world.log_points(10)
    time.sleep(4)  # more than one refresh period
    assert float(b.execute_script("return " + bar)) == paused
    b.find_element("id", "pause").click()
    wait_for(b, f"parseFloat({bar}) > {paused}", timeout=10)


def test_a_searched_comparison_draws_expected_best_and_capacity(
        browser: Any, world: World, shots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report as the stats work extends it (labels, pairs with Holm, searches with their
    expected best of k trials, a capacity axis) draws its charts: served in process, with
    that report in place of today's."""
    import threading

    import uvicorn
    from gradq.service.experiments import report as report_mod
    from gradq.ui.app import create_app

    monkeypatch.setenv("GRADQ_HOME", str(world.home))
    old = report_mod.build_report(world.compare)
    arms = [{**a, "label": f"hidden-{16 * (i + 1)}",
             "train": {"metric": "train_loss", "n": a["n"], "mean": a["mean"] * 0.8,
                       "ci95": None},
             "search": {"space": {"optimizer.lr": {"loguniform": [1e-4, 1e-1]}},
                        "method": "random", "trials": 4, "pruned": 1, "failed": 0,
                        "chosen": {"optimizer.lr": 0.003}, "budget": {"epochs": 12},
                        "expected_best": [0.6 - 0.05 * k - 0.01 * i for k in range(4)]}}
            for i, a in enumerate(old["arms"])]
    labels = [a["label"] for a in arms]
    new = {**{k: v for k, v in old.items() if k != "paired"}, "arms": arms,
           "better": [[labels[0], labels[1]]],
           "pairs": [{"a": labels[0], "b": labels[1], "n": 3, "diff": -0.1, "ci95": [-0.2, 0],
                      "p": 0.01, "p_holm": 0.03, "significant": True}],
           "capacity": {"key": "model.hidden", "labels": labels,
                        "x": [16.0 * (i + 1) for i in range(len(labels))]}}
    monkeypatch.setattr(report_mod, "build_report", lambda job_id: new)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{port}/jobs/{world.compare}")
        wait_for(browser, "document.getElementById('capacity') && "
                          "document.getElementById('capacity').data")
        best = wait_for(browser, "document.getElementById('expected-best') && "
                                 "document.getElementById('expected-best').data")
        assert sorted(t["name"] for t in best) == sorted(labels)
        assert [t["name"] for t in traces(browser, "capacity")] == ["test_loss", "train_loss"]
        text = browser.find_element("id", "report").text
        assert "p (Holm)" in text and "random" in text
        browser.save_screenshot(str(shots / "searched-comparison.png"))
        bad = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not bad, bad
    finally:
        server.should_exit = True
        thread.join(10)
