"""Which training procedure a spec asks for: one network, a bagged ensemble, a kernel SVM.

``train`` dispatches on ``model.kind`` and ``regularization.bagging``; one network goes to
``Trainer``. The two other procedures live here:

- a kernel SVM (``gradq.nn.svm.KernelSVM``, SMO in the dual) fitted once on the training
  part, its accuracies reported as one point at step 1;
- bagging (Goodfellow et al. §7.11): k networks, each trained by ``Trainer`` on its own
  bootstrap resample of the training part with its own initialisation, whose predicted
  probabilities (or regression outputs) are averaged.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from types import ModuleType
from typing import Any

import numpy as np
from gradq.nn.backend import to_numpy
from gradq.nn.preprocess import Splits
from gradq.nn.svm import KernelSVM
from gradq.train.engine import architecture
from gradq.train.interface import Hooks, MetricRow, NullHooks, Outcome
from gradq.train.trainer import Trainer

PARTS = ("train", "val", "test")
BOOTSTRAP_SALT = 2_147_483_647  # keeps the resampling stream apart from the trainer's streams
MEMBER_SEED_SALT = 1_000_000_007
PROB_FLOOR = 1e-300  # log(0) guard for an ensemble probability of exactly 0


def train(spec: dict[str, Any], data: Splits, xp: ModuleType, hooks: Hooks,
          resume: bytes | None = None, checkpoint_interval_s: float = 0.0) -> Outcome:
    """Run the procedure of ``spec`` on prepared data and return its outcome
    (``checkpoint_interval_s``: see ``Trainer``)."""
    if spec["model"]["kind"] == "kernel_svm":
        if spec["regularization"]["bagging"]:
            raise ValueError("regularization.bagging: bags networks only, not "
                             "model.kind: kernel_svm")
        return train_kernel_svm(spec, data, xp, hooks)
    if spec["regularization"]["bagging"]:
        # Resume is not supported for bagging: a checkpoint would hold one member's state
        # only, so a bagged job that is handed to another worker starts again from member 0
        # (metric rows already stored are kept: the table ignores duplicates).
        return train_bagging(spec, data, xp, hooks, checkpoint_interval_s)
    return Trainer(spec, data, xp, hooks, checkpoint_interval_s).run(resume)


# --------------------------------------------------------------------- kernel SVM
def train_kernel_svm(spec: dict[str, Any], data: Splits, xp: ModuleType,
                     hooks: Hooks | None = None) -> Outcome:
    """Fit ``KernelSVM`` on the training part; report train/val/test accuracy at step 1.

    ``params`` counts what prediction needs: the support vectors (n_SV × d), their dual
    coefficients α_i·y_i (n_SV × one column per one-vs-one pair) and one intercept per pair.
    """
    hooks = hooks or NullHooks()
    if data.task != "classification":
        raise ValueError("model.kind: kernel_svm needs a classification task, not "
                         f"{data.task} (use model.kind: mlp, or optimizer closed_form)")
    m = spec["model"]
    dtype = np.dtype(spec["dtype"])
    t0 = time.perf_counter()
    svm = KernelSVM(m["kernel"], C=float(m["C"]), gamma=m["gamma"], degree=int(m["degree"]),
                    coef0=float(m["coef0"]))
    svm.fit(xp.asarray(data.X_train, dtype=dtype), data.y_train)
    accuracy: dict[str, float] = {}
    for part in PARTS:
        X, y = getattr(data, f"X_{part}"), getattr(data, f"y_{part}")
        if len(X):
            pred = to_numpy(svm.predict(xp.asarray(X, dtype=dtype)))
            accuracy[f"{part}_accuracy"] = float((pred == y).mean())
    run_s = time.perf_counter() - t0
    rows: list[MetricRow] = [(k, 1, 1.0, run_s, v) for k, v in accuracy.items()]
    progress = {"epoch": 1, "epochs": 1, "step": 1, "steps": 1, **accuracy}
    hooks.log(rows, progress)  # nothing left to cancel: the fit is done

    coef = to_numpy(svm._coef)  # (n_SV, n_pairs): α_i y_i of each one-vs-one problem
    rho = to_numpy(svm._rho)  # (n_pairs,): f_p(x) = Σ α_i y_i K(x_i, x) − ρ_p
    sv = to_numpy(svm.support_vectors_)
    arrays = {"support_vectors": sv, "support": np.asarray(svm.support_),
              "dual_coef": coef, "intercept": -rho, "classes": np.asarray(svm.classes_)}
    final = {**accuracy, "epochs": 1, "steps": 1, "best_epoch": 1}
    extra = {"svm": {"n_support": int(svm.n_support_), "kernel": svm.kernel,
                     "gamma": float(svm.gamma_), "C": svm.C, "degree": svm.degree,
                     "coef0": svm.coef0, "iterations": int(sum(svm.n_iter_))}}
    return Outcome("succeeded", final, int(sv.size + coef.size + rho.size), arrays, {},
                   run_s, len(data.X_train), extra=extra, last_rows=rows, progress=progress)


# ------------------------------------------------------------------------ bagging
class MemberHooks:
    """Forward one member's curves with names prefixed ``member{i}/``; drop checkpoints."""

    def __init__(self, hooks: Hooks, index: int, members: int) -> None:
        self.hooks = hooks
        self.prefix = f"member{index}/"
        self.index, self.members = index, members

    def log(self, rows: list[MetricRow], progress: dict[str, Any]) -> bool:
        named = [(self.prefix + name, *rest) for name, *rest in rows]
        return self.hooks.log(named, {**progress, "member": self.index,
                                      "members": self.members})

    def checkpoint(self, epoch: int, step: int, data: bytes) -> None:
        """Not stored: bagging does not resume (see ``train``)."""


def bootstrap_indices(seed: int, member: int, n: int) -> np.ndarray:
    """n indices drawn with replacement from range(n), from (seed, member) alone."""
    return np.random.default_rng([seed, member, BOOTSTRAP_SALT]).integers(0, n, size=n)


def member_seed(seed: int, member: int) -> int:
    """A seed of its own for member ``member``: its initialisation, batch order, dropout."""
    return int(np.random.SeedSequence([seed, member, MEMBER_SEED_SALT]).generate_state(1)[0])


def train_bagging(spec: dict[str, Any], data: Splits, xp: ModuleType,
                  hooks: Hooks | None = None, checkpoint_interval_s: float = 0.0) -> Outcome:
    """Train k members on bootstrap resamples and average their predictions.

    The final losses and accuracies are the ensemble's, from the averaged probabilities
    (or outputs). ``extra["bagging"]`` holds, on the test part, each member's error and
    the ensemble's, with the book's decomposition (§7.11): with ε_i member i's error vector
    on an example (prediction − target, the target one-hot for classification, so that
    E[ε²] is the Brier score), v = mean_i E[ε_i²], c = mean_{i≠j} E[ε_i·ε_j] and
    predicted_error = v/k + (k−1)/k·c, which equals observed_error = E[(mean_i ε_i)²]
    exactly for the empirical moments. A member's ``test_error`` is its E[ε_i²].

    Member i's curves are logged as ``member{i}/<metric>`` (its ``train_*`` figures are on
    its own resample); the ensemble's figures are one point at the total step count.
    """
    hooks = hooks or NullHooks()
    k = int(spec["regularization"]["bagging"]["models"])
    arch = architecture(spec, data)
    seed = int(spec["seed"])
    n = len(data.X_train)
    t0 = time.perf_counter()
    sets = {part: xp.asarray(getattr(data, f"X_{part}"), dtype=np.dtype(spec["dtype"]))
            for part in PARTS if len(getattr(data, f"X_{part}"))}
    sums: dict[str, Any] = {}
    test_preds: list[np.ndarray] = []
    members: list[dict[str, Any]] = []
    member_finals: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    initial: dict[str, np.ndarray] = {}
    samples = params = steps = epochs = 0
    for i in range(k):
        idx = bootstrap_indices(seed, i, n)
        member_data = dataclasses.replace(data, X_train=data.X_train[idx],
                                          y_train=data.y_train[idx])
        member_spec = copy.deepcopy(spec)
        member_spec["seed"] = member_seed(seed, i)
        member_spec["regularization"]["bagging"] = None
        trainer = Trainer(member_spec, member_data, xp, MemberHooks(hooks, i, k),
                          checkpoint_interval_s)
        out = trainer.run()
        samples += out.samples
        if out.status != "succeeded":
            out.error = f"bagging member {i}: {out.error}" if out.error else out.error
            out.run_s = time.perf_counter() - t0
            return out
        arrays.update({f"member{i}/{name}": a for name, a in out.arrays.items()})
        initial.update({f"member{i}/{name}": a for name, a in out.initial.items()})
        params += out.params
        steps += int(out.final["steps"])
        epochs = max(epochs, int(out.final["epochs"]))
        for part, X in sets.items():
            p = trainer.net.predict(X).astype(np.float64)  # probabilities, or outputs
            sums[part] = p if part not in sums else sums[part] + p
            if part == "test":
                test_preds.append(to_numpy(p))
        member_finals.append(out.final)
        members.append({"bootstrap_unique": int(np.unique(idx).size),
                        "epochs": out.final["epochs"], "steps": out.final["steps"],
                        "best_epoch": out.final["best_epoch"]})

    final: dict[str, Any] = {}
    for part, total in sums.items():
        y = getattr(data, f"y_{part}")
        final.update(ensemble_metrics(arch.output, to_numpy(total) / k, y, part))
    run_s = time.perf_counter() - t0
    rows: list[MetricRow] = [(name, steps, float(epochs), run_s, float(v))
                             for name, v in final.items()]
    progress = {"epoch": epochs, "epochs": epochs, "step": steps, "steps": steps,
                "members": k, **final}
    hooks.log(rows, progress)
    final.update({"epochs": epochs, "steps": steps, "best_epoch": epochs})

    report: dict[str, Any] = {"models": k, "members": members}
    if test_preds:
        errors = [error_vectors(arch.output, p, data.y_test) for p in test_preds]
        decomposition = error_decomposition(errors)
        for member, out_final, e in zip(members, member_finals, errors, strict=True):
            member.update({key: out_final[key] for key in ("test_loss", "test_accuracy")
                           if key in out_final})
            member["test_error"] = float((e * e).sum(axis=-1).mean())  # E[ε_i²]
        report["ensemble"] = {**{key: final[key] for key in ("test_loss", "test_accuracy")
                                 if key in final},
                              "test_error": decomposition["observed_error"]}
        report.update(decomposition)
    return Outcome("succeeded", final, params, arrays, initial, run_s, samples,
                   extra={"bagging": report}, last_rows=rows, progress=progress)


def ensemble_metrics(output: str, pred: np.ndarray, y: np.ndarray, part: str
                     ) -> dict[str, float]:
    """Loss (and accuracy) of averaged predictions ``pred`` against targets ``y``.

    softmax: cross-entropy −mean log p(y); sigmoid: Bernoulli cross-entropy; linear: mean
    squared error summed over outputs — the trainer's losses, computed from probabilities.
    """
    if output == "softmax":
        picked = pred[np.arange(len(y)), y.astype(np.int64)]
        return {f"{part}_loss": float(-np.log(np.maximum(picked, PROB_FLOOR)).mean()),
                f"{part}_accuracy": float((pred.argmax(axis=-1) == y).mean())}
    if output == "sigmoid":
        p, t = pred[:, 0], y.astype(np.float64)
        ll = t * np.log(np.maximum(p, PROB_FLOOR)) + (1 - t) * np.log(
            np.maximum(1 - p, PROB_FLOOR))
        return {f"{part}_loss": float(-ll.mean()),
                f"{part}_accuracy": float(((p > 0.5) == (t > 0.5)).mean())}
    d = pred - y.reshape(len(y), -1)
    return {f"{part}_loss": float((d * d).sum(axis=-1).mean())}


def error_vectors(output: str, pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ε = prediction − target per example, (n, outputs); classes as one-hot vectors.

    A sigmoid's probability p is the two-class vector (1 − p, p), so that E[ε²] is the
    Brier score for every classifier.
    """
    if output == "softmax":
        return pred - np.eye(pred.shape[1])[y.astype(np.int64)]
    if output == "sigmoid":
        p = np.concatenate([1 - pred, pred], axis=1)
        return p - np.eye(2)[y.astype(np.int64)]
    return pred - y.reshape(len(y), -1).astype(np.float64)


def error_decomposition(errors: list[np.ndarray]) -> dict[str, float]:
    """v, c, the predicted and the observed squared error of the average of k members.

    E[·] is the mean over examples of the dot product over outputs. With
    M_ij = E[ε_i·ε_j]: v = mean_i M_ii, c = mean_{i≠j} M_ij, and
    E[(Σ_i ε_i / k)²] = (1/k²)Σ_ij M_ij = v/k + (k−1)/k·c.
    """
    k = len(errors)
    E = np.stack(errors)  # (k, n, outputs)
    M = np.einsum("ino,jno->ij", E, E) / E.shape[1]
    v = float(np.trace(M) / k)
    c = float((M.sum() - np.trace(M)) / (k * (k - 1))) if k > 1 else 0.0
    mean_error = E.mean(axis=0)
    return {"v": v, "c": c, "predicted_error": v / k + (k - 1) / k * c,
            "observed_error": float((mean_error * mean_error).sum(axis=-1).mean())}
