"""Which training procedure a spec asks for: one network, a bagged ensemble, a kernel SVM."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from gradq.nn.preprocess import Splits

from .trainer import Hooks, Outcome, Trainer


def train(spec: dict[str, Any], data: Splits, xp: ModuleType, hooks: Hooks,
          resume: bytes | None = None) -> Outcome:
    """Run the procedure of ``spec`` on prepared data and return its outcome."""
    if spec["model"]["kind"] == "kernel_svm":
        raise ValueError("model.kind: kernel_svm is not wired into the trainer yet")
    if spec["regularization"]["bagging"]:
        raise ValueError("regularization.bagging is not wired into the trainer yet")
    return Trainer(spec, data, xp, hooks).run(resume)
