"""How a comparison fans out into child jobs, and what its tuning phases decide.

A comparison's arms are ``compare.optimizers`` (the shorthand for arms over
``optimizer``) or ``compare.arms`` (a label and dotted keys that override the base spec).

**Paired design.** For a seed, every arm sees the same split (a function of the seed and
the data section, which arms cannot override), the same minibatch order (the permutation
of the training rows drawn from (seed, epoch); arms with different batch sizes cut it
into different batches, so their minibatches differ) and the same initial parameters
wherever their architectures match (drawn from the seed and the architecture; LSUV also
reads a batch of ``max(batch_size, 256)`` rows). Arms of different shapes cannot share
initial parameters: the parent's progress says so under ``shapes``.

**Tuning.** An arm's setting may be a grid (a list; DeepOBS's protocol) or a search space
with ``compare.search`` (``service.search``). Tuning runs (``_phase: tune``) and search
trials (``_phase: search``) train on the tuning seeds, which follow the evaluation seeds
and never overlap them: a grid point and a search trial alike run on every tuning seed and
are ranked on their mean over them (a trial with a failed seed has no value). The setting
with the best validation metric then runs on every evaluation seed (``_phase: final``).
Each arm goes on to its final runs as soon as its own tuning is done.

**Successive halving** keeps one job per trial and tuning seed for its whole life, so its
curves stay whole. Its rungs (``search.rungs``) are the arm's, cut from its
``training.epochs``, which therefore cannot be searched under the pruner (refused at
validation). A trial's job trains to its rung's epochs (``training.epochs`` of its spec) and ends
``succeeded`` with a checkpoint of that end (``_checkpoint_end``). When every trial of the
rung has ended, ``advance`` (applied by ``service.store.settle`` under the comparison's row
lock, in the transaction that records the last trial's end) promotes the top 1/eta: each goes back
to ``queued`` with the next rung's epochs in its spec and resumes from its checkpoint,
recomputing nothing; the others are pruned and their checkpoints dropped. A trial waiting
for its rung's decision keeps its checkpoint (``service.store.checkpoint_policy``). The decisions
are recorded in the parent's progress (``search``) in the same transaction, so a killed
worker, a lost message or a retry cannot decide a rung twice or lose a trial.

``data.folds: k`` runs one child per fold and reports like a comparison over folds.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from gradq.service.celery_app import queue_for
from gradq.service.experiments import search
from gradq.service.spec import (
    FULL_BATCH_OPTIMIZERS,
    arm_spec,
    is_grid,
    is_space,
    lower_is_better,
    normalise_optimizer,
)
from gradq.service.status import FINISHED_NAMES
from gradq.service.store.newjob import NewJob


@dataclass(frozen=True)
class ArmPlan:
    """One arm: its fixed settings, and its grid or search space (keys are the
    optimizer's hyperparameters for ``compare.optimizers``, dotted spec keys otherwise)."""

    index: int
    label: str
    values: dict[str, Any]
    grid: dict[str, list[Any]]
    space: dict[str, dict[str, Any]]
    optimizer: str | None  # compare.optimizers: the arm's optimizer; None for compare.arms


def arm_label(arm: dict[str, Any]) -> str:
    """``adam``, ``adam(lr=0.01)``, ``sgd(lr~loguniform[0.001, 1])``: how an optimizer arm
    is named in reports (grids shown as lists)."""
    hyper = {k: v for k, v in arm.items() if k != "name"}
    if not hyper:
        return arm["name"]
    shown = [f"{k}~{search.space_label(v)}" if is_space(v) else f"{k}={v}"
             for k, v in sorted(hyper.items())]
    return f"{arm['name']}(" + ", ".join(shown) + ")"


def plan_arms(spec: dict[str, Any]) -> list[ArmPlan]:
    """The arms of a normalised comparison, in order."""
    cmp = spec["compare"]
    out = []
    if cmp.get("arms") is not None:
        for n, arm in enumerate(cmp["arms"]):
            over = {k: v for k, v in arm.items() if k != "label"}
            grid = {k: v for k, v in over.items() if is_grid(k, v)}
            space = {k: v for k, v in over.items() if is_space(v)}
            fixed = {k: v for k, v in over.items() if k not in grid and k not in space}
            out.append(ArmPlan(n, arm["label"], fixed, grid, space, None))
        return out
    for n, arm in enumerate(cmp["optimizers"]):
        hyper = {k: v for k, v in arm.items() if k != "name"}
        grid = {k: v for k, v in hyper.items() if isinstance(v, list)}
        space = {k: v for k, v in hyper.items() if is_space(v)}
        fixed = {k: v for k, v in hyper.items() if k not in grid and k not in space}
        out.append(ArmPlan(n, arm_label(arm), fixed, grid, space, arm["name"]))
    return out


def tunes(spec: dict[str, Any]) -> bool:
    """Whether a comparison has a grid or a search to decide (else nothing to advance)."""
    return (spec.get("kind") == "compare" and bool(spec.get("compare"))
            and any(arm.grid or arm.space for arm in plan_arms(spec)))


def grid_points(arm: ArmPlan) -> list[dict[str, Any]]:
    """Every setting of an arm's grid, as {key: value} ([{}] without a grid)."""
    keys = list(arm.grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(arm.grid[k] for k in keys))]


def tuning_metric(metric: str) -> str:
    """The validation counterpart of the comparison's metric, used to choose a setting."""
    return "val_accuracy" if metric.endswith("accuracy") else "val_loss"


def eval_seeds(spec: dict[str, Any]) -> list[int]:
    """The seeds whose runs enter the statistics: seed, seed + 1, …"""
    return [spec["seed"] + i for i in range(spec["compare"]["seeds"])]


def tune_seeds(spec: dict[str, Any]) -> list[int]:
    """The seeds that tuning runs and search trials train on, after the evaluation seeds
    (so the two never overlap)."""
    cmp = spec["compare"]
    return [spec["seed"] + cmp["seeds"] + i for i in range(cmp["tune_seeds"])]


def user_batch_of(spec: dict[str, Any]) -> bool:
    return bool(spec.get("_user_batch", True))


def _child(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(spec)
    c["kind"] = "train"
    c["compare"] = None
    c.update(changes)
    return c


def child_job(spec: dict[str, Any], arm: ArmPlan, setting: dict[str, Any], seed: int,
              **labels: Any) -> NewJob:
    """The run of ``arm`` at ``setting`` (its grid or search values) on ``seed``."""
    if arm.optimizer is not None:
        opt = normalise_optimizer({"name": arm.optimizer, **arm.values, **setting},
                                  f"compare.optimizers[{arm.index}]")
        training = dict(spec["training"])
        if not user_batch_of(spec) and opt["name"] in FULL_BATCH_OPTIMIZERS:
            training["batch_size"] = "full"  # line-search methods default to the full batch
        c = _child(spec, optimizer=opt, seed=seed, training=training, _arm=arm.label,
                   _arm_index=arm.index, **labels)
    else:
        over = {**arm.values, **setting}
        c = arm_spec(spec, over, user_batch_of(spec))
        c.update(seed=seed, name=spec["name"], _arm=arm.label, _arm_index=arm.index,
                 _arm_overrides=over, **labels)
    return NewJob(c, "train", spec["name"], seed, c["optimizer"], queue_for(spec["device"]))


def expand(spec: dict[str, Any], user_batch: bool = True,
           io: tuple[int, int] | None = None) -> NewJob:
    """A train job, or a comparison with its first children (per arm × evaluation seed,
    grid point × tuning seed, search trial, or fold). ``io`` (inputs, outputs of the
    network, where known) names the arms' shapes when they differ."""
    queue = queue_for(spec["device"])
    if spec["kind"] == "train" and not spec["data"]["folds"]:
        return NewJob(spec, "train", spec["name"], spec["seed"], spec["optimizer"], queue)
    children: list[NewJob] = []
    if spec["kind"] == "train":
        k = spec["data"]["folds"]
        for i in range(k):
            # one arm whose samples are the folds (as a comparison's are its seeds), so the
            # report gives the mean over folds with its interval
            c = _child(spec, _fold=[k, i], _arm=spec["optimizer"]["name"])
            children.append(NewJob(c, "train", spec["name"], spec["seed"], spec["optimizer"],
                                   queue))
        return NewJob(spec, "compare", spec["name"], spec["seed"], {}, queue, children)
    spec = {**spec, "_user_batch": spec.get("_user_batch", user_batch)}
    tune = tune_seeds(spec)
    progress: dict[str, Any] = {}
    searches: dict[str, Any] = {}
    shapes: dict[str, str] = {}
    for arm in plan_arms(spec):
        if arm.space:
            trials, state = _search_children(spec, arm, tune)
            children += trials
            searches[arm.label] = state
        elif arm.grid:
            for point in grid_points(arm):
                for seed in tune:
                    children.append(child_job(spec, arm, point, seed, _phase="tune",
                                              _grid=point))
        else:
            for seed in eval_seeds(spec):
                children.append(child_job(spec, arm, {}, seed))
        if io is not None and not _tunes_shape(arm):
            shapes[arm.label] = _shape(children[-1].spec, io)
    if searches or any(arm.grid for arm in plan_arms(spec)):
        progress["seeds"] = {"tune": tune, "eval": eval_seeds(spec)}
    if searches:
        progress["search"] = searches
    if len(set(shapes.values())) > 1:
        progress["shapes"] = shapes
    return NewJob(spec, "compare", spec["name"], spec["seed"], {}, queue, children, progress)


def _tunes_shape(arm: ArmPlan) -> bool:
    return any(k.startswith("model.hidden") or k == "model" for k in [*arm.grid, *arm.space])


def _shape(child: dict[str, Any], io: tuple[int, int]) -> str:
    """``64-100-10``: inputs, hidden widths, outputs (a kernel SVM: its kernel)."""
    m = child["model"]
    if m["kind"] != "mlp":
        return f"kernel_svm({m['kernel']})"
    return "-".join(str(w) for w in (io[0], *m["hidden"], io[1]))


def _search_children(spec: dict[str, Any], arm: ArmPlan, tune: list[int]
                     ) -> tuple[list[NewJob], dict[str, Any]]:
    """An arm's search trials, and the search's state as the parent's progress holds it."""
    cfg = spec["compare"]["search"]
    n = cfg["trials"]
    if cfg["method"] == "tpe":  # the first wave only; the next when it has ended (tpe.py)
        settings = _tpe_wave(spec, arm, [])
    else:
        settings = search.sample(arm.space, n, cfg["method"], spec["seed"])
    sh = (cfg["pruner"] or {}).get("successive_halving")
    out: list[NewJob] = []
    rungs: list[int] = []
    for t, setting in enumerate(settings):
        # every trial on every tuning seed, one job each: a trial is ranked on its mean over
        # the same seeds as every other trial (as a grid point is)
        for seed in tune:
            job = child_job(spec, arm, setting, seed, _phase="search", _trial=t, _grid=setting)
            epochs = job.spec["training"]["epochs"]
            rungs = search.rungs(epochs, sh["eta"], sh["min_epochs"]) if sh else [epochs]
            if len(rungs) > 1:
                job.spec["training"]["epochs"] = rungs[0]
                job.spec["_checkpoint_end"] = True  # a promoted trial resumes from its end
            out.append(job)
    state = {"space": arm.space, "method": cfg["method"], "trials": n, "pruned": 0,
             "chosen": None, "budget": {"epochs": 0, "samples": 0, "run_s": 0.0},
             "values": [None] * n, "epochs": [0] * n,
             "metric": tuning_metric(spec["compare"]["metric"]),
             "eta": sh["eta"] if sh else None, "rungs": rungs, "rung": 0,
             "alive": list(range(n)), "done": False, "samples": [0] * n, "run_s": [0.0] * n,
             "cum_job_s": {}, "job_epochs": {}}
    if cfg["method"] == "tpe":
        state["alive"], state["asked"] = list(range(len(settings))), len(settings)
    return out, state


def _tpe_wave(spec: dict[str, Any], arm: ArmPlan, told: list[tuple[dict[str, Any],
                                                                  float | None]]
              ) -> list[dict[str, Any]]:
    """The next wave of a tpe search: ``wave`` settings (fewer at the end)."""
    from gradq.service.experiments import tpe

    cfg = spec["compare"]["search"]
    wave = cfg.get("wave") or tpe.DEFAULT_WAVE
    n = min(wave, cfg["trials"] - len(told))
    return tpe.propose(arm.space, n, spec["seed"], len(told) // wave, told,
                       lower_is_better(tuning_metric(spec["compare"]["metric"])), wave)


# ------------------------------------------------------------------ after tuning
@dataclass(frozen=True)
class Kid:
    """A child as ``advance`` sees it: its spec, status and (when ended) result."""

    id: str
    spec: dict[str, Any]
    status: str
    final: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None


@dataclass
class Advance:
    """What a comparison's tuning decided when a child ended: final runs to add, trials to
    promote (job id → the next rung's epochs), checkpoints to drop, the new progress."""

    new: list[NewJob] = field(default_factory=list)
    promote: dict[str, int] = field(default_factory=dict)
    drop_checkpoints: list[str] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    changed: bool = False


def advance(spec: dict[str, Any], kids: list[Kid], progress: dict[str, Any]) -> Advance:
    """Decide whatever the children's ends allow: a search rung whose trials have all
    ended (promote or prune; the last rung chooses the point), a grid whose tuning runs have
    all ended (choose the point). Arms go on independently. Pure: the caller applies it."""
    out = Advance(progress=copy.deepcopy(progress))
    if spec.get("kind") != "compare" or not spec.get("compare"):
        return out  # k folds: nothing to decide
    metric = tuning_metric(spec["compare"]["metric"])
    by_arm: dict[int, list[Kid]] = {}
    for k in kids:
        by_arm.setdefault(k.spec.get("_arm_index", -1), []).append(k)
    for arm in plan_arms(spec):
        mine = by_arm.get(arm.index, [])
        if arm.space:
            _advance_search(spec, arm, mine, out)
        elif arm.grid:
            _advance_grid(spec, arm, mine, metric, out)
    return out


def _mean_value(jobs: list[Kid], metric: str) -> float | None:
    """A trial's value: the mean over its tuning seeds, None unless every seed has one
    (a trial that failed on one seed is not ranked on the others alone)."""
    values = [_value(k, metric) for k in jobs]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def _value(k: Kid, metric: str) -> float | None:
    if k.status != "succeeded" or not k.final:
        return None
    v = k.final.get(metric)
    return float(v) if v is not None and math.isfinite(v) else None


def _advance_search(spec: dict[str, Any], arm: ArmPlan, mine: list[Kid], out: Advance
                    ) -> None:
    st = out.progress.get("search", {}).get(arm.label)
    if st is None or st["done"]:
        return
    trials: dict[int, list[Kid]] = {}  # a trial's jobs, one per tuning seed
    for k in sorted((k for k in mine if k.spec.get("_phase") == "search"),
                    key=lambda k: k.spec["seed"]):
        trials.setdefault(k.spec["_trial"], []).append(k)
    alive = st["alive"]
    if any(t not in trials or any(k.status not in FINISHED_NAMES for k in trials[t])
           for t in alive):
        return  # the rung is decided once every trial in it has ended on every seed
    low = lower_is_better(st["metric"])
    values = {t: _mean_value(trials[t], st["metric"]) for t in alive}
    cum = st.setdefault("cum_job_s", {})  # each job's run_s when last seen
    reached = st.setdefault("job_epochs", {})  # each job's epochs (a failed one: its last)
    for t in alive:  # what each trial reached (on all its seeds), and what it cost
        st["values"][t] = values[t]
        for k in trials[t]:
            reached[k.id] = int((k.final or {}).get("epochs", reached.get(k.id, 0)))
        st["epochs"][t] = sum(reached[k.id] for k in trials[t])
        for k in trials[t]:
            timing = k.timing or {}
            run_s = float(timing.get("run_s") or 0.0)  # cumulative over the job's sessions
            session = max(0.0, run_s - cum.get(k.id, 0.0))
            # a stack's time is shared by its replicas (timing.stacked, where recorded)
            st["run_s"][t] += session / max(1, int(timing.get("stacked") or 1))
            cum[k.id] = run_s
            # samples_per_s is this session's samples over this session's own seconds
            own_s = float(timing.get("session_s", run_s) or 0.0)
            st["samples"][t] += round(float(timing.get("samples_per_s") or 0.0) * own_s)
    st["budget"] = {"epochs": sum(st["epochs"]), "samples": sum(st["samples"]),
                    "run_s": round(sum(st["run_s"]), 6)}
    out.changed = True
    if st.get("asked", st["trials"]) < st["trials"]:  # tpe: tell this wave, ask the next
        told = [(trials[t][0].spec["_grid"], st["values"][t]) for t in range(st["asked"])]
        settings = _tpe_wave(spec, arm, told)
        first = st["asked"]
        for i, setting in enumerate(settings):  # each trial on every tuning seed, as above
            for seed in tune_seeds(spec):
                out.new.append(child_job(spec, arm, setting, seed, _phase="search",
                                         _trial=first + i, _grid=setting))
        st["alive"] = list(range(first, first + len(settings)))
        st["asked"] = first + len(settings)
        return
    if "asked" in st:  # tpe's last wave has ended: choose among every wave's trials
        values = dict(enumerate(st["values"]))
    last = st["rung"] + 1 >= len(st["rungs"])
    if not last:
        kept = search.promote(values, st["eta"], low)
        if kept:
            st["pruned"] += len(alive) - len(kept)
            out.drop_checkpoints += [k.id for t in alive if t not in kept for k in trials[t]]
            st["rung"] += 1
            st["alive"] = kept
            for t in kept:
                for k in trials[t]:
                    out.promote[k.id] = st["rungs"][st["rung"]]
            return
    # the last rung (or no trial left to promote): choose among the trials of the highest
    # rung that has a finite value, and run the choice on every evaluation seed
    chosen = search.best(values, low)
    if chosen is None:
        reached = {t: v for t, v in enumerate(st["values"]) if v is not None}
        top = max((st["epochs"][t] for t in reached), default=None)
        chosen = search.best({t: v for t, v in reached.items() if st["epochs"][t] == top},
                             low)
    st["done"] = True
    st["alive"] = []
    out.drop_checkpoints += [k.id for jobs in trials.values() for k in jobs]
    if chosen is None:
        return
    setting = trials[chosen][0].spec["_grid"]
    st["chosen"] = setting
    st["chosen_trial"] = chosen
    for seed in eval_seeds(spec):
        out.new.append(child_job(spec, arm, setting, seed, _phase="final", _grid=setting))


def _advance_grid(spec: dict[str, Any], arm: ArmPlan, mine: list[Kid], metric: str,
                  out: Advance) -> None:
    tuning = out.progress.setdefault("tuning", {})
    tune = [k for k in mine if k.spec.get("_phase") == "tune"]
    if arm.label in tuning or not tune or any(k.status not in FINISHED_NAMES for k in tune):
        return
    low = lower_is_better(metric)
    scores: dict[str, list[float]] = {}
    for k in tune:
        key = json.dumps(k.spec["_grid"], sort_keys=True)
        scores.setdefault(key, [])
        v = _value(k, metric)
        if v is not None:
            scores[key].append(v)
    mean = {key: (sum(v) / len(v) if v else None) for key, v in scores.items()}
    grid = [{"setting": json.loads(key), "n": len(scores[key]), metric: mean[key]}
            for key in scores]
    ranked = [key for key in mean if mean[key] is not None]
    out.changed = True
    if not ranked:
        tuning[arm.label] = {"metric": metric, "grid": grid, "chosen": None}
        return
    best = (min if low else max)(ranked, key=lambda key: mean[key])
    setting = json.loads(best)
    tuning[arm.label] = {"metric": metric, "grid": grid, "chosen": setting}
    for seed in eval_seeds(spec):
        out.new.append(child_job(spec, arm, setting, seed, _phase="final", _grid=setting))


def settled_trial(child_spec: dict[str, Any], parent_progress: dict[str, Any]) -> bool:
    """Whether a search trial's part is over (pruned, or its arm's search decided): a retry
    of the comparison leaves it as it is."""
    if child_spec.get("_phase") != "search":
        return False
    st = parent_progress.get("search", {}).get(child_spec.get("_arm"))
    return st is not None and (st["done"] or child_spec["_trial"] not in st["alive"])
