"""A suite's dashboard page in Chromium: its workloads link to their comparison pages,
the performance profiles and win probability are drawn from the report, no console error.
(The browser set-up is ``test_ui_browser``'s; screenshots go where it puts them.)"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli import cli_json, serve_ui, write_spec
from test_ui_browser import (  # noqa: F401 - fixtures used by name
    _free_port,
    _need_browser,
    browser,
    page,
    shots,
    wait_for,
)

SUITE = {"kind": "suite", "name": "browser-suite", "seed": 0, "device": "cpu",
         "suite": {"workloads": [
             {"name": "iris-<b>lin</b>", "metric": "val_loss", "target": 0.7,
              "spec": {"data": {"dataset": "iris"}, "model": {"hidden": []},
                       "training": {"epochs": 4, "batch_size": 16}}},
             {"name": "moons-mlp", "metric": "val_accuracy", "target": 0.8,
              "spec": {"data": {"dataset": "moons"}, "model": {"hidden": [4]},
                       "training": {"epochs": 4, "batch_size": 32}}}],
             "optimizers": [{"name": "sgd", "lr": {"loguniform": [0.01, 1.0]}},
                            {"name": "adam", "lr": {"loguniform": [0.001, 0.1]}}],
             "search": {"method": "random", "trials": 3}, "seeds": 2}}


class World:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = ""
        self.suite = ""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    _need_browser()
    home = tmp_path_factory.mktemp("suite-ui") / "home"
    w = World(home)
    port = _free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADQ_HOME", str(home))
        mp.delenv("GRADQ_DATABASE_URL", raising=False)
        from gradq.service.store.db import dispose_engines

        dispose_engines()
        w.suite = cli_json("run", str(write_spec(home.parent, SUITE, "s.json")))["id"]
        try:
            with serve_ui(home, port) as w.url:
                yield w
        finally:
            dispose_engines()


def test_the_suite_page_links_workloads_and_draws_profiles(
        page: Any, world: World, shots: Path) -> None:  # noqa: F811 - the fixtures above
    from selenium.webdriver.common.by import By

    rep = json.loads(urllib.request.urlopen(
        f"{world.url}/api/jobs/{world.suite}/report", timeout=10).read())
    assert rep["kind"] == "suite" and rep["id"] == world.suite
    b = page(f"/jobs/{world.suite}")
    # the workloads table: each workload once, its name as text, linked to its comparison
    rows = b.find_elements(By.CSS_SELECTOR, "table.suite-workloads tbody td.name[rowspan]")
    assert [r.text for r in rows] == ["iris-<b>lin</b>", "moons-mlp"]
    links = [a.get_attribute("href") for a in
             b.find_elements(By.CSS_SELECTOR, "table.suite-workloads a.mono")]
    want = [f"{world.url}/jobs/{w['comparison']}" for w in rep["workloads"]]
    assert links == want
    scores = b.find_elements(By.CSS_SELECTOR, "table.suite-scores tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, "td.name").text for r in scores] == \
        list(rep["score"])
    # the profile chart: one step trace per arm, the report's ρ(τ) drawn as it is
    wait_for(b, "document.getElementById('suite-profiles') && "
                "document.getElementById('suite-profiles').data")
    drawn = b.execute_script("return document.getElementById('suite-profiles').data.map("
                             "t => ({name: t.name, x: t.x, y: t.y, shape: t.line.shape}))")
    assert len(drawn) == len(rep["profiles"]["rho"])
    for t, (label, rho) in zip(drawn, rep["profiles"]["rho"].items(), strict=True):
        assert t["name"].startswith(label + " (score ")
        assert t["x"] == rep["profiles"]["tau"] and t["y"] == pytest.approx(rho)
        assert t["shape"] == "hv"
    win = wait_for(b, "document.getElementById('suite-win') && "
                      "document.getElementById('suite-win').data.map(t => t.y)")
    assert win == [pytest.approx(rep["win_probability"][a]) for a in rep["profiles"]["rho"]]
    # its x axis, as drawn, counts whole trials (1, 2, 3: no tick at 1.5)
    ticks = b.execute_script("return [...document.querySelectorAll("
                             "'#suite-win .xaxislayer-above .xtick text')].map(t => t.textContent)")
    assert ticks and all(t.isdigit() for t in ticks), ticks
    height = b.execute_script("return document.body.scrollHeight")
    b.set_window_size(1400, min(max(height + 40, 800), 6000))
    b.save_screenshot(str(shots / "suite-page.png"))  # the suite page itself, to look at
    b.set_window_size(1400, 1000)
    # following a workload's link opens its comparison's page
    b.find_elements(By.CSS_SELECTOR, "table.suite-workloads a.mono")[1].click()
    wait_for(b, "document.querySelector('table.arms')")
    assert b.current_url == want[1]
