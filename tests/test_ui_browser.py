"""The dashboard in a real browser: Selenium drives Debian's chromium (headless, offline)
against ``gradq ui`` started as a subprocess on a database that holds a finished
comparison, a searched one, one whose arms vary the model's width and carry labels
written as HTML, a bagging job, a job that logs new points while the test watches, and
a hostile job name. One server and one browser serve every test of the module.

The tests read what is drawn (the SVG plotly made: a trace's path, the axis' tick
labels, the legend's text), not the arrays the page's script handed plotly. Each page
must load with no error box and nothing on the console.

Outside CI the tests skip where chromium, chromedriver or selenium is missing; with
``CI=true`` they never skip. Screenshots of each page are saved under pytest's tmp dir
(``GRADQ_SCREENSHOTS=DIR`` puts them there instead).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli import cli_json, serve_ui, write_spec

HOSTILE = "<img src=x onerror=alert(1)>"
BOLD = "<b>x</b>"
LINK = '<a href="https://example.com">y</a>'
TRAIN = {"data": {"dataset": "moons"}, "model": {"hidden": [4]},
         "training": {"epochs": 3, "batch_size": 64}, "device": "cpu"}
COMPARE = {**TRAIN, "name": "browser-compare", "kind": "compare",
           "compare": {"optimizers": ["sgd", "momentum", "adam"], "seeds": 3}}
ARMS = {**TRAIN, "name": "capacity-arms", "kind": "compare",
        "compare": {"arms": [{"label": BOLD, "model.hidden": [2]},
                             {"label": LINK, "model.hidden": [4]},
                             {"label": "w8 & more", "model.hidden": [8]}], "seeds": 2}}
SEARCHED = {**TRAIN, "name": "searched", "kind": "compare",
            "compare": {"arms": [{"label": "sgd", "optimizer.name": "sgd",
                                  "optimizer.lr": {"loguniform": [1e-3, 1.0]}},
                                 {"label": "adam", "optimizer.name": "adam",
                                  "optimizer.lr": {"loguniform": [1e-4, 0.1]}}],
                        "search": {"method": "random", "trials": 4}, "seeds": 2}}
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
        self.compare = self.hostile = self.live = self.train = ""
        self.arms = self.searched = self.bagging = ""
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
        w.arms = cli_json("run", str(write_spec(tmp, ARMS, "a.json")))["id"]
        w.searched = cli_json("run", str(write_spec(tmp, SEARCHED, "s.json")))["id"]
        w.bagging = cli_json("run", str(write_spec(tmp, {
            **TRAIN, "name": "bagged", "regularization": {"bagging": {"models": 3}}},
            "b.json")))["id"]
        w.train = cli_json("run", str(write_spec(tmp, {
            **TRAIN, "name": "moons-train", "training": {"epochs": 30, "batch_size": 64}},
            "t.json")))["id"]
        [w.live] = create.create_jobs(expand(validate({**TRAIN, "name": "live-job"})),
                                    dataset=None, priority=0, max_attempts=3)
        w.lease = leases.claim(w.live, "browser-test")
        w.log_points(30)
        try:
            with serve_ui(home, port) as w.url:
                yield w
        finally:
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
    browser.get_log("browser")  # what an earlier test's page logged was checked there
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
    name = request.node.callspec.id if hasattr(request.node, "callspec") else request.node.name
    browser.save_screenshot(str(shots / f"{name}.png"))
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


def ready(browser: Any) -> None:
    """Wait until the page's script has drawn (or failed to draw) each of its charts."""
    wait_for(browser, "document.body.dataset.ready === '1'")


def traces(browser: Any, chart: str) -> list[dict[str, Any]]:
    return browser.execute_script(
        "return document.getElementById(arguments[0]).data.map(t => "
        "({name: t.name, band: t.meta === 'band', n: t.x.length}))", chart)


def legend(browser: Any, chart: str) -> list[str]:
    """The text of a chart's legend entries, as drawn."""
    return browser.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} .legend .legendtext`)]"
        ".map(t => t.textContent)", chart)


def tick_labels(browser: Any, chart: str, axis: str) -> list[str]:
    return browser.execute_script(
        f"return [...document.querySelectorAll(`#${{arguments[0]}} .{axis}tick text`)]"
        ".map(t => t.textContent)", chart)


DRAWN = """
const gd = document.getElementById(arguments[0]);
const trace = gd.querySelectorAll('.scatterlayer .trace')[arguments[1]];
const path = trace.querySelector('path.js-line');
const box = path.getBoundingClientRect();
const ticks = [...gd.querySelectorAll('.xaxislayer-above .xtick text')].map(t => {
  const r = t.getBoundingClientRect();
  return [parseFloat(t.textContent.replace('\\u2212', '-')), r.left + r.width / 2];
}).filter(t => Number.isFinite(t[0]));
return {d: path.getAttribute('d'), right: box.right, ticks: ticks};
"""


def drawn(browser: Any, chart: str, trace: int = 0) -> dict[str, Any]:
    """What the user sees of one line: its SVG path, the x axis' tick values, and the x (in
    data units, read off the drawn ticks) where the line ends on the screen."""
    doc = browser.execute_script(DRAWN, chart, trace)
    (v0, p0), (v1, p1) = doc["ticks"][0], doc["ticks"][-1]
    doc["last_x"] = v0 + (doc["right"] - p0) * (v1 - v0) / (p1 - p0)
    doc["tick_values"] = [v for v, _ in doc["ticks"]]
    return doc


def wait_drawn(browser: Any, chart: str, done: Callable[[dict[str, Any]], bool],
               timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = drawn(browser, chart)
        if done(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"{chart}: the drawn line did not change as expected: {doc}")
        time.sleep(0.1)


def children(parent: str) -> list[dict[str, Any]]:
    """A comparison's runs (``status --json``: with arm and seed), by arm and seed."""
    kids = [cli_json("status", r["id"]) for r in cli_json("ls", "--parent", parent)]
    return sorted(kids, key=lambda r: (r["arm"], r["seed"]))


def overlay_path(world: World) -> str:
    kids = children(world.compare)
    picked = [c["id"] for c in kids if c["seed"] == kids[0]["seed"]][:2]
    return "/overlay?" + "&".join(f"job={j}" for j in picked)


# ----------------------------------------------------------------------- pages
# Each page, the charts it must draw, a screenshot of it, and no error anywhere.
PAGES: dict[str, tuple[Callable[[World], str], tuple[str, ...]]] = {
    "jobs": (lambda w: "/", ()),
    "train-job": (lambda w: f"/jobs/{w.train}", ("chart-loss",)),
    "comparison": (lambda w: f"/jobs/{w.compare}",
                   ("mean-test_loss", "mean-val_loss", "mean-train_loss", "final-interval")),
    "searched-comparison": (lambda w: f"/jobs/{w.searched}",
                            ("mean-test_loss", "final-interval", "expected-best")),
    "arms-and-capacity": (lambda w: f"/jobs/{w.arms}",
                          ("mean-test_loss", "final-interval", "capacity")),
    "bagging": (lambda w: f"/jobs/{w.bagging}", ("chart-loss", "chart-members-test_loss")),
    "overlay": (overlay_path, ("overlay-train_loss", "overlay-val_loss")),
    "running-job": (lambda w: f"/jobs/{w.live}", ("chart-loss",)),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_loads_with_no_error(page: Any, world: World, name: str) -> None:
    path, charts = PAGES[name]
    b = page(path(world))
    ready(b)
    errors = [e.text for e in b.find_elements("css selector", ".error-box, #live-error")]
    assert not errors, errors
    for chart in charts:
        paths = b.execute_script(
            "return [...document.querySelectorAll(`#${arguments[0]} .scatterlayer path`)]"
            ".map(p => p.getAttribute('d')).filter(Boolean).length", chart)
        assert paths, f"{chart} drew nothing"
    drawn_ids = b.execute_script("return [...document.querySelectorAll('.plot')].map(p => p.id)")
    assert set(charts) <= set(drawn_ids), drawn_ids


def test_the_comparison_page_draws_every_arm_with_its_band(page: Any, world: World) -> None:
    b = page(f"/jobs/{world.compare}")
    report = cli_json("report", world.compare)
    arms = [a.get("label") or a["optimizer"] for a in report["arms"]]
    ready(b)
    for chart in ("mean-test_loss", "mean-val_loss", "mean-train_loss"):
        assert sorted(legend(b, chart)) == sorted(arms)
        t = traces(b, chart)
        assert sorted(x["name"] for x in t if x["band"]) == sorted(f"{a} 95% band" for a in arms)
        assert all(x["n"] > 2 for x in t)
    assert sorted(tick_labels(b, "final-interval", "y")) == sorted(arms)
    assert b.find_element("id", "report").text.count("95% interval") >= 1
    kids = b.find_elements("css selector", "#children a[href^='/jobs/']")
    assert len(kids) == len(cli_json("ls", "--parent", world.compare))


def test_a_searched_comparison_draws_expected_best_and_capacity(page: Any,
                                                                 world: World) -> None:
    b = page(f"/jobs/{world.searched}")
    ready(b)
    assert sorted(legend(b, "expected-best")) == ["adam", "sgd"]
    assert tick_labels(b, "expected-best", "x")[:1] == ["1"]  # trials k from 1
    text = b.find_element("id", "report").text
    assert "p (Holm)" in text and "random" in text
    b = page(f"/jobs/{world.arms}")
    ready(b)
    assert legend(b, "capacity")[0] == "test_loss"
    assert b.execute_script(
        "return document.querySelector('#capacity .xtitle').textContent") == "model.hidden"
    assert [float(v) for v in tick_labels(b, "capacity", "x")][-1] >= 6  # widths 2 to 8


def test_a_bagging_job_draws_its_members_together_and_the_ensemble_as_points(
        page: Any, world: World) -> None:
    """One chart per metric holds every member's curve; the ensemble's figures (one point
    each, at the last step) are drawn as markers, not as invisible one-point lines."""
    b = page(f"/jobs/{world.bagging}")
    ready(b)
    titles = [e.text for e in b.find_elements("css selector", "#curves .chart-title")]
    assert titles[:2] == ["accuracy", "loss"]
    assert sorted(titles[2:]) == sorted(f"members: {s}_{m}" for s in ("train", "val", "test")
                                        for m in ("accuracy", "loss"))
    assert legend(b, "chart-members-test_loss") == [f"member{i}/test_loss" for i in range(3)]
    markers = b.execute_script(
        "return document.querySelectorAll('#chart-loss .scatterlayer .points path').length")
    assert markers == 3  # train, val and test loss of the ensemble


# ------------------------------------------------------------------ live chart
def test_the_live_job_grows_without_a_reload_and_keeps_its_zoom(page: Any,
                                                                world: World) -> None:
    """Given a running job's page, when the job logs new points, then the drawn line (its
    SVG path) ends at the new last step and the x axis' ticks extend; a zoom survives."""
    b = page(f"/jobs/{world.live}")
    ready(b)
    assert sorted(legend(b, "chart-loss")) == ["train_loss", "val_loss"]
    before = drawn(b, "chart-loss")
    assert before["last_x"] == pytest.approx(world.next_step - 1, abs=0.5)
    b.execute_script("window.__sameDocument = true")
    world.log_points(20)
    after = wait_drawn(b, "chart-loss", lambda d: d["last_x"] > before["last_x"] + 10)
    assert after["d"] != before["d"]
    assert after["last_x"] == pytest.approx(world.next_step - 1, abs=0.5)
    assert max(after["tick_values"]) > max(before["tick_values"])
    assert b.execute_script("return window.__sameDocument") is True  # no reload
    # a zoom survives new points: the drawn axis stays on [5, 25]
    points = b.execute_script("return document.getElementById('curves').dataset.points")
    b.execute_script("Plotly.relayout('chart-loss', {'xaxis.range': [5, 25]})")
    world.log_points(20)
    wait_for(b, f"document.getElementById('curves').dataset.points !== '{points}'")
    zoomed = drawn(b, "chart-loss")
    assert 5 <= min(zoomed["tick_values"]) <= 10 and 20 <= max(zoomed["tick_values"]) <= 25
    # and the whole curve, new points included, is drawn when the zoom is reset
    b.execute_script("Plotly.relayout('chart-loss', {'xaxis.autorange': true})")
    whole = wait_drawn(b, "chart-loss", lambda d: d["last_x"] > after["last_x"] + 10)
    assert whole["last_x"] == pytest.approx(world.next_step - 1, abs=0.5)
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
    assert b.execute_script(f"return {chart}.querySelector('.xtitle').textContent") == "epoch"
    ep = wait_drawn(b, "chart-loss", lambda d: d["last_x"] < world.next_step / 5)
    assert ep["last_x"] == pytest.approx((world.next_step - 1) / 10, abs=0.2)  # 10 steps an epoch
    # a PNG of the chart, made in the page (plotly's toImage) under the CSP
    png = b.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"Plotly.toImage({chart}, {{format: 'png', width: 600, height: 300}})"
        ".then(done, e => done('error: ' + e))")
    assert png.startswith("data:image/png;base64,"), png[:80]


def test_a_failing_live_refresh_shows_a_banner_and_keeps_trying(page: Any, world: World,
                                                                  shots: Path) -> None:
    """Given a running job's page, when its refreshes fail, then a banner says so, the
    console says why, the chart stays; when they work again the banner goes and the line
    moves on."""
    b = page(f"/jobs/{world.live}")
    ready(b)
    before = drawn(b, "chart-loss")
    b.execute_script("window.__fetch = window.fetch;"
                     "window.fetch = () => Promise.reject(new TypeError('network down (test)'))")
    banner = wait_for(b, "document.getElementById('live-error') && "
                         "document.getElementById('live-error').textContent", timeout=10)
    assert "network down (test)" in banner
    b.save_screenshot(str(shots / "live-refresh-failing.png"))
    logged: list[str] = []
    deadline = time.monotonic() + 10
    while not ({"(page)", "(curves)"} <= {s for m in logged for s in re.findall(r"\(\w+\)", m)}):
        assert time.monotonic() < deadline, logged
        logged += [e["message"] for e in b.get_log("browser") if e["level"] == "SEVERE"]
        time.sleep(0.2)
    assert all("gradq live refresh" in m and "network down (test)" in m for m in logged), logged
    assert drawn(b, "chart-loss")["d"] == before["d"]  # what was drawn stays
    b.execute_script("window.fetch = window.__fetch")
    world.log_points(10)
    wait_for(b, "!document.getElementById('live-error')", timeout=10)
    wait_drawn(b, "chart-loss", lambda d: d["last_x"] > before["last_x"] + 5)


# -------------------------------------------------------------- what users wrote
def test_a_hostile_name_is_shown_as_text_and_runs_nothing(page: Any, world: World) -> None:
    b = page(f"/jobs/{world.hostile}")
    assert b.find_element("css selector", "h1 .name").text == HOSTILE
    assert b.execute_script("return document.querySelectorAll('img').length") == 0
    ready(b)
    b = page("/")
    assert HOSTILE in [e.text for e in b.find_elements("css selector", "td.name")]
    assert b.execute_script("return document.querySelectorAll('main img').length") == 0


NO_MARKUP = ("return document.querySelectorAll('.plot svg a, .plot svg [style*=\"bold\"], "
             ".plot svg [style*=\"italic\"]').length")


def test_labels_written_as_html_are_drawn_as_text(page: Any, world: World) -> None:
    """Arm labels such as <b>x</b> and <a href=…>y</a> read as written in every legend,
    axis, hover label and table: plotly draws no link and no bold."""
    labels = [a["label"] for a in ARMS["compare"]["arms"]]
    b = page(f"/jobs/{world.arms}")
    ready(b)
    for chart in ("mean-test_loss", "mean-val_loss", "mean-train_loss"):
        assert sorted(legend(b, chart)) == sorted(labels), chart
    assert sorted(tick_labels(b, "final-interval", "y")) == sorted(labels)
    assert sorted(e.text for e in b.find_elements("css selector", "table.arms td.name")
                  ) == sorted(labels)
    assert b.execute_script(NO_MARKUP) == 0
    # the hover label of the linked arm's mean curve
    hover = b.execute_script(
        "const gd = document.getElementById('mean-test_loss');"
        "const i = gd.data.findIndex(t => t.meta !== 'band' && t.name.includes('href'));"
        "Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: 0}]);"
        "const h = gd.querySelector('.hoverlayer');"
        "return {text: h.textContent, links: h.querySelectorAll('a').length}")
    assert LINK in hover["text"] and hover["links"] == 0
    # the overlay of two of its runs: labelled by name, arm and seed, as text
    kids = [c for c in children(world.arms) if c["arm"] in (BOLD, LINK) and c["seed"] == 0]
    b = page("/overlay?" + "&".join(f"job={c['id']}" for c in kids))
    ready(b)
    want = sorted(f"capacity-arms · {c['arm']} · seed 0" for c in kids)
    assert sorted(legend(b, "overlay-train_loss")) == want
    assert sorted(e.text for e in b.find_elements("css selector", "#overlay-jobs .name")) == want
    assert b.execute_script(NO_MARKUP) == 0


def test_picked_jobs_are_overlaid_with_their_labels(page: Any, world: World) -> None:
    b = page(f"/?parent={world.compare}")
    boxes = b.find_elements("css selector", "input[name=job]")[:2]
    picked = [x.get_attribute("value") for x in boxes]
    for x in boxes:
        x.click()
    b.find_element("id", "overlay").click()
    wait_for(b, "document.getElementById('overlay-train_loss')")
    ready(b)
    want = [f"browser-compare · {cli_json('status', j)['arm']} · seed "
            f"{cli_json('status', j)['seed']}" for j in picked]
    assert sorted(legend(b, "overlay-train_loss")) == sorted(want)


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
