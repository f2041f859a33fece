// gradq dashboard: charts (plotly.js) and live refresh. No framework, no build step.
// Everything a user wrote reaches the DOM through textContent, and plotly through plain().
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                 "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const LIVE_MS = 2000;

async function getJSON(url) {
  const r = await fetch(url, {headers: {accept: "application/json"}, cache: "no-store"});
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// plotly draws a subset of HTML in trace names, tick labels and titles (<a href> as a live
// link, <b> as bold). A user's string goes to plotly with < > & as the entities plotly
// turns back into text (it knows &lt; &gt; &amp;), so it is drawn exactly as written.
function plain(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// ------------------------------------------------------------ live refresh trouble
// A refresh that fails leaves what is drawn in place, says so in a banner above the page
// (removed by the next refresh that succeeds) and logs the cause; the loop keeps trying.
const troubles = new Map();  // source -> message

function trouble(source, err) {
  const message = err && err.message ? err.message : String(err);
  if (troubles.get(source) !== message) console.error(`gradq live refresh (${source}):`, err);
  troubles.set(source, message);
  showTroubles();
}

function recovered(source) {
  if (troubles.delete(source)) showTroubles();
}

function showTroubles() {
  let box = document.getElementById("live-error");
  if (!troubles.size) { if (box) box.remove(); return; }
  if (!box) {
    box = el("p", {id: "live-error", class: "live-error", role: "status"});
    document.querySelector("main").prepend(box);
  }
  box.textContent = "Live refresh failed, showing the last data received; retrying. " +
    [...new Set(troubles.values())].join("; ");
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ------------------------------------------------------------------ controls
// The controls above a group of charts: x axis, log y, EMA smoothing. Each chart redraws
// itself from its own data when one changes.
function controlsOf(container) {
  const box = container.closest(".card").querySelector(".controls");
  const c = {x: box.querySelector(".ctl-x"), log: box.querySelector(".ctl-log"),
             ema: box.querySelector(".ctl-ema"), out: box.querySelector(".ctl-ema-value"),
             listeners: []};
  const fire = () => { c.out.textContent = c.ema.value; c.listeners.forEach(f => f()); };
  c.x.addEventListener("change", fire);
  c.log.addEventListener("change", fire);
  c.ema.addEventListener("input", fire);
  c.state = () => ({x: c.x.value, log: c.log.checked, ema: parseFloat(c.ema.value)});
  return c;
}

// TensorBoard's debiased exponential moving average; NaN and null pass through.
function ema(ys, a) {
  if (!a) return ys;
  let acc = 0, w = 0;
  return ys.map(y => {
    if (y === null || !Number.isFinite(y)) return y;
    acc = a * acc + (1 - a) * y; w = a * w + (1 - a);
    return acc / w;
  });
}

const AXIS_TITLES = {step: "step", epoch: "epoch", time_s: "time (s)"};

// One chart: a title, a PNG button, a plotly div. `series` returns the traces for the
// current control state; zoom and hidden legend entries survive redraws (uirevision).
// Plotly.react compares data arrays by reference, and a live chart's arrays grow in place:
// a new datarevision at each draw tells it that the data changed.
class Chart {
  constructor(parent, id, title, opts) {
    this.opts = Object.assign({xTitle: null, valueAxis: "y"}, opts || {});
    const wrap = el("figure", {class: "chart"});
    const head = el("figcaption");
    head.append(el("span", {class: "chart-title"}, title));
    const png = el("button", {type: "button", class: "png"}, "PNG");
    head.append(png);
    this.div = el("div", {id: id, class: "plot"});
    wrap.append(head, this.div);
    parent.append(wrap);
    this.title = title;
    this.revision = 0;
    png.addEventListener("click", () => Plotly.downloadImage(this.div, {
      format: "png", width: 1000, height: 500, filename: "gradq-" + title.replace(/\W+/g, "-")}));
  }

  draw(traces, state) {
    const logAxis = {type: state.log ? "log" : "linear", automargin: true};
    const layout = {
      uirevision: this.div.id, datarevision: ++this.revision,
      margin: {l: 60, r: 20, t: 10, b: 45}, height: 340,
      hovermode: "closest", hoverlabel: {namelength: -1},  // whole labels, not cut at 15
      legend: {orientation: "h", x: 0, y: 1.02, yanchor: "bottom"},
      xaxis: {title: {text: plain(this.opts.xTitle || AXIS_TITLES[state.x] || "")},
              automargin: true},
      yaxis: {automargin: true},
      font: {family: "system-ui, sans-serif", size: 12}, paper_bgcolor: "#fff",
      plot_bgcolor: "#fff"};
    Object.assign(layout[this.opts.valueAxis + "axis"], logAxis);
    if (this.opts.layout) this.opts.layout(layout);
    return Plotly.react(this.div, traces, layout, {displayModeBar: false, responsive: true});
  }
}

// An axis that counts trials: up to 12 of them, a tick at each whole trial (none at 1.5).
function wholeTicks(layout, count) {
  if (count <= 12) layout.xaxis.dtick = 1;
}

// A line and a band take a user's label (`name`) as written; plotly gets it through plain().
// A series of one point (a bagging ensemble's final figures) is drawn as a marker.
function line(name, xs, ys, color, extra) {
  return Object.assign({type: "scatter", mode: xs.length === 1 ? "markers" : "lines",
                        name: plain(name), x: xs, y: ys,
                        line: {color: color, width: 1.8}, legendgroup: name}, extra || {});
}

function band(name, xs, lo, hi, color) {
  return {type: "scatter", mode: "lines", name: plain(name + " 95% band"), meta: "band",
          x: xs.concat(xs.slice().reverse()), y: hi.concat(lo.slice().reverse()),
          fill: "toself", fillcolor: color + "33", line: {width: 0, color: color},
          hoverinfo: "skip", showlegend: false, legendgroup: name};
}

// train/val/test of one measure share a chart; a bagging member's curves
// ("member2/test_loss") share one chart per metric with the other members'.
function groupOf(metric) {
  const member = /^member\d+\/(.+)$/.exec(metric);
  return member ? "members: " + member[1] : metric.replace(/^(train|val|test)_/, "");
}

function colorOf(metric, taken) {
  const member = /^member(\d+)\//.exec(metric);
  if (member) return PALETTE[+member[1] % PALETTE.length];
  const split = ["train_", "val_", "test_"].findIndex(p => metric.startsWith(p));
  return split >= 0 ? PALETTE[split] : PALETTE[3 + taken % 7];
}

// ---------------------------------------------------------- a job's curves
// Every metric, grouped by what it measures (train/val/test loss on one chart). While the
// job runs, only points after the last step shown are fetched.
async function jobCurves(container) {
  const job = container.dataset.job;
  const ctl = controlsOf(container);
  const data = {};  // metric -> {step, epoch, time_s, value}
  const charts = {};
  const colors = {};
  const merge = doc => {
    for (const [m, s] of Object.entries(doc.metrics)) {
      const d = data[m] || (data[m] = {step: [], epoch: [], time_s: [], value: []});
      const last = d.step.length ? d.step[d.step.length - 1] : -Infinity;
      s.step.forEach((st, i) => {
        if (st > last) for (const k of ["step", "epoch", "time_s", "value"]) d[k].push(s[k][i]);
      });
    }
  };
  const redraw = () => {
    const st = ctl.state();
    const groups = {};
    // the job's own measures first, then its bagging members'
    const names = Object.keys(data).sort((a, b) =>
      (a.startsWith("member") - b.startsWith("member")) || (a < b ? -1 : a > b ? 1 : 0));
    for (const m of names) (groups[groupOf(m)] ||= []).push(m);
    for (const [g, metrics] of Object.entries(groups)) {
      if (!charts[g]) charts[g] = new Chart(container, "chart-" + g.replace(/\W+/g, "-"), g);
      charts[g].draw(metrics.map(m => {
        // train, val and test (and each member) keep one colour each across the charts
        colors[m] ||= colorOf(m, Object.keys(colors).length);
        return line(m, data[m][st.x], ema(data[m].value, st.ema), colors[m]);
      }), st);
    }
    container.dataset.points = Object.values(data).reduce((n, d) => n + d.step.length, 0);
  };
  ctl.listeners.push(redraw);
  merge(await getJSON(`/api/jobs/${job}/curves?max_points=2000`));
  if (!Object.keys(data).length) container.append(el("p", {class: "muted"}, "No points yet."));
  redraw();
  if (!container.dataset.live) return;
  const tick = async () => {
    let status;
    try {
      status = (await getJSON(`/api/jobs/${job}`)).status;
      const lasts = Object.values(data).map(d => d.step[d.step.length - 1]);
      const after = lasts.length ? Math.min(...lasts) : -1;
      const doc = await getJSON(`/api/jobs/${job}/curves?max_points=2000&after_step=${after}`);
      const before = container.dataset.points;
      merge(doc);
      const empty = container.querySelector("p.muted");
      if (empty && Object.keys(data).length) empty.remove();
      redraw();
      if (container.dataset.points !== before) container.dataset.updates = (+container.dataset.updates || 0) + 1;
      recovered("curves");
    } catch (e) {
      trouble("curves", e);
      status = null;  // unknown: try again
    }
    if (status === null || container.dataset.liveStatuses.split(" ").includes(status)) setTimeout(tick, LIVE_MS);
  };
  setTimeout(tick, LIVE_MS);
}

// ------------------------------------------------------------- comparison
// Mean curve per arm with its 95% band (two traces per arm), the final metric's interval
// per arm, and the expected best of k search trials when the report has a search.
async function compareCharts(container) {
  const job = container.dataset.job;
  const metric = container.dataset.metric;
  const ctl = controlsOf(container);
  ctl.x.value = "step";
  ctl.x.disabled = true;
  ctl.x.title = "mean curves are drawn over steps";
  const metrics = [...new Set([metric, "val_loss", "train_loss"])];
  const charts = {};
  const curves = {};
  let report = null;
  const colorOf = {};
  const color = label => (colorOf[label] ||= PALETTE[Object.keys(colorOf).length % PALETTE.length]);
  const redraw = () => {
    const st = ctl.state();
    for (const m of metrics) {
      const arms = (curves[m] || {}).arms || {};
      if (!Object.keys(arms).length) continue;
      charts[m] ||= new Chart(container, "mean-" + m, m + ": mean over seeds, 95% band");
      const traces = [];
      for (const [label, a] of Object.entries(arms)) {
        traces.push(band(label, a.step, ema(a.lo, st.ema), ema(a.hi, st.ema), color(label)));
        traces.push(line(label, a.step, ema(a.mean, st.ema), color(label)));
      }
      charts[m].draw(traces, st);
    }
    if (!report) return;
    const arms = report.arms.filter(a => a.mean !== null);
    if (arms.length) {
      charts.final ||= new Chart(container, "final-interval",
        `final ${report.metric}: mean and 95% interval`,
        {valueAxis: "x", xTitle: report.metric,
         layout: l => { l.height = 90 + 34 * arms.length; l.yaxis.autorange = "reversed"; l.showlegend = false; }});
      charts.final.draw(arms.map(a => {
        const name = a.label || a.optimizer;
        const [lo, hi] = a.ci95 || [a.mean, a.mean];
        return {type: "scatter", mode: "markers", name: plain(name), x: [a.mean],
                y: [plain(name)],  // a category axis: its tick labels are the arms' labels
                marker: {color: color(name), size: 9},
                error_x: {type: "data", symmetric: false, array: [hi - a.mean],
                          arrayminus: [a.mean - lo], color: color(name), thickness: 2, width: 6}};
      }), st);
    }
    const cap = report.capacity;
    if (cap && cap.x && cap.labels) {
      // the metric against the one key the arms vary (the book's capacity figure)
      const byLabel = Object.fromEntries(report.arms.map(a => [a.label || a.optimizer, a]));
      const pts = cap.labels.map((l, i) => ({x: cap.x[i], a: byLabel[l]})).filter(p => p.a && p.a.mean !== null)
        .sort((p, q) => p.x - q.x);
      const err = side => pts.map(p => p.a.ci95 ? (side > 0 ? p.a.ci95[1] - p.a.mean : p.a.mean - p.a.ci95[0]) : 0);
      const traces = [line(report.metric, pts.map(p => p.x), pts.map(p => p.a.mean), PALETTE[1],
        {mode: "lines+markers", error_y: {type: "data", symmetric: false, array: err(1), arrayminus: err(-1)}})];
      const train = pts.filter(p => p.a.train && p.a.train.mean !== null);
      if (train.length) traces.push(line(train[0].a.train.metric, train.map(p => p.x), train.map(p => p.a.train.mean),
                                         PALETTE[0], {mode: "lines+markers"}));
      charts.capacity ||= new Chart(container, "capacity", `${report.metric} against ${cap.key}`,
                                    {xTitle: cap.key + (cap.sum ? " (sum)" : "")});
      charts.capacity.draw(traces, Object.assign({}, st, {ema: 0}));
    }
    const searched = report.arms.filter(a => a.search && a.search.expected_best);
    if (searched.length) {
      const most = Math.max(...searched.map(a => a.search.expected_best.length));
      charts.best ||= new Chart(container, "expected-best", "expected best validation metric of k trials",
                                {xTitle: "trials k", layout: l => wholeTicks(l, most)});
      charts.best.draw(searched.map(a => {
        const name = a.label || a.optimizer;
        const ys = a.search.expected_best;
        return line(name, ys.map((_, i) => i + 1), ys, color(name), {mode: "lines+markers"});
      }), Object.assign({}, st, {ema: 0}));
    }
  };
  ctl.listeners.push(redraw);
  const load = async () => {
    report = await getJSON(`/api/jobs/${job}/report`);
    for (const m of metrics) curves[m] = await getJSON(`/api/jobs/${job}/mean_curves?metric=${encodeURIComponent(m)}`);
    redraw();
    if (report.partial) setTimeout(refresh, 2 * LIVE_MS);
  };
  // the first load's error is the page's error box (start); a later one is a live trouble
  const refresh = () => load().then(() => recovered("report"), e => {
    trouble("report", e);
    setTimeout(refresh, 2 * LIVE_MS);
  });
  await load();
}

// ------------------------------------------------------------------- suite
// Dolan–Moré performance profiles (a step per arm: the fraction of workloads it reaches
// the target within τ times the fastest arm's time) and the win probability against the
// number of trials, from the suite's report.
async function suiteCharts(container) {
  const job = container.dataset.job;
  const ctl = {x: "step", log: false, ema: 0};
  let profile = null, win = null;
  const load = async () => {
    const rep = await getJSON(`/api/jobs/${job}/report`);
    const labels = Object.keys(rep.profiles.rho);
    const color = i => PALETTE[i % PALETTE.length];
    profile ||= new Chart(container, "suite-profiles",
      `performance profiles: time to target in ${rep.budget}`,
      {xTitle: "τ (ratio to the fastest arm)", layout: l => { l.yaxis.range = [-0.02, 1.02]; l.yaxis.title = {text: "ρ(τ)"}; }});
    profile.draw(labels.map((a, i) => line(`${a} (score ${rep.score[a].toFixed(2)})`, rep.profiles.tau,
                                            rep.profiles.rho[a], color(i), {line: {shape: "hv", color: color(i), width: 1.8}})), ctl);
    if (rep.win_probability.k.length) {
      win ||= new Chart(container, "suite-win", "probability of being best against trials per arm",
        {xTitle: "trials k", layout: l => {
          l.yaxis.range = [-0.02, 1.02];
          wholeTicks(l, rep.win_probability.k.length);
        }});
      win.draw(labels.map((a, i) => line(a, rep.win_probability.k, rep.win_probability[a], color(i),
                                          {mode: "lines+markers"})), ctl);
    }
    if (rep.partial) setTimeout(load, 2 * LIVE_MS);
  };
  await load();
}

// ---------------------------------------------------------------- overlay
async function overlay(container) {
  const jobs = [...document.querySelectorAll("#overlay-jobs li")].map(li => ({id: li.dataset.job, label: li.dataset.label}));
  const ctl = controlsOf(container);
  const docs = await Promise.all(jobs.map(j => getJSON(`/api/jobs/${j.id}/curves?max_points=2000`)));
  const charts = {};
  const redraw = () => {
    const st = ctl.state();
    const names = [...new Set(docs.flatMap(d => Object.keys(d.metrics)))].sort();
    for (const m of names) {
      charts[m] ||= new Chart(container, "overlay-" + m, m);
      charts[m].draw(docs.map((d, i) => d.metrics[m] && line(jobs[i].label, d.metrics[m][st.x],
        ema(d.metrics[m].value, st.ema), PALETTE[i % PALETTE.length])).filter(Boolean), st);
    }
  };
  ctl.listeners.push(redraw);
  redraw();
}

// ------------------------------------------------------------- live pages
// While something on the page runs, fetch the page again and swap the parts marked
// data-swap (tables, status). The jobs list has a pause switch; checked boxes survive.
function livePage() {
  const pause = document.getElementById("pause");
  if (pause) {
    pause.checked = localStorage.getItem("gradq.pause") === "1";
    pause.addEventListener("change", () => localStorage.setItem("gradq.pause", pause.checked ? "1" : "0"));
  }
  const every = document.body.dataset.page === "jobs" ? 3000 : 2500;
  const tick = async () => {
    if (!document.body.dataset.live || (pause && pause.checked)) { setTimeout(tick, every); return; }
    try {
      const r = await fetch(location.href, {cache: "no-store"});
      if (!r.ok) throw new Error(`${location.pathname}: HTTP ${r.status}`);
      const fresh = new DOMParser().parseFromString(await r.text(), "text/html");
      const checked = new Set([...document.querySelectorAll("input[name=job]:checked")].map(i => i.value));
      for (const part of document.querySelectorAll("[data-swap][id]")) {
        const next = fresh.getElementById(part.id);
        if (next) part.replaceChildren(...next.childNodes);
      }
      for (const i of document.querySelectorAll("input[name=job]")) i.checked = checked.has(i.value);
      const status = fresh.getElementById("job-status");
      const mine = document.getElementById("job-status");
      if (status && mine) { mine.textContent = status.textContent; mine.className = status.className; }
      document.body.dataset.live = fresh.body.dataset.live;
      recovered("page");
    } catch (e) {
      trouble("page", e);  // the server went away for a moment: try again next tick
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

// The page's charts are drawn once each; body[data-ready] is set when all have settled.
function start() {
  livePage();
  const run = (id, fn) => {
    const c = document.getElementById(id);
    if (!c) return Promise.resolve();
    return fn(c).catch(e => {
      console.error(`gradq: drawing #${id} failed:`, e);
      c.append(el("p", {class: "error-box"}, String(e)));
    });
  };
  Promise.all([run("curves", jobCurves), run("compare-charts", compareCharts),
               run("suite-charts", suiteCharts), run("overlay-charts", overlay)])
    .then(() => { document.body.dataset.ready = "1"; });
  const form = document.getElementById("overlay-form");
  if (form) form.addEventListener("submit", e => {
    if (!form.querySelector("input[name=job]:checked")) { e.preventDefault(); alertBox("Check one or more jobs to overlay."); }
  });
}

function alertBox(text) {
  let box = document.getElementById("notice");
  if (!box) { box = el("p", {id: "notice", class: "notice"}); document.querySelector("main").prepend(box); }
  box.textContent = text;
}

document.addEventListener("DOMContentLoaded", start);
