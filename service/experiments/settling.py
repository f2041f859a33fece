"""What a comparison decides when one of its children ends: the policy, kept out of the store.

The store (``service.store.settle``) locks the comparison's row, reads its children and
applies what these functions answer in the same transaction. Light on purpose: the
planning in ``compare`` (which loads spec validation) is imported only when a tuning phase
has something to decide, so that cancelling a job stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gradq.service.status import FINISHED, JobStatus

if TYPE_CHECKING:
    from gradq.service.experiments.compare import Advance, Kid

#: the phases whose children's ends can decide something (a grid's choice, a search rung)
DECIDING_PHASES = ("tune", "search")


def may_decide(child_spec: dict[str, Any]) -> bool:
    """Whether the end of this child can decide something (once its arm and phase have no
    sibling left to end): only tuning runs and search trials can."""
    return child_spec.get("_phase") in DECIDING_PHASES


def tunes(parent_spec: dict[str, Any]) -> bool:
    """Whether the comparison has a grid or a search to decide (else ends only end it)."""
    from gradq.service.experiments.compare import tunes as has_tuning

    return has_tuning(parent_spec)


def plan(parent_spec: dict[str, Any], kids: list[Kid], progress: dict[str, Any]) -> Advance:
    """What the comparison's tuning can now decide from its children (``compare.advance``):
    final runs to add, trials to promote, checkpoints to drop. Pure."""
    from gradq.service.experiments.compare import advance

    return advance(parent_spec, kids, progress)


def conclusion(counts: Mapping[JobStatus, int], cancel_requested: bool
               ) -> tuple[JobStatus, str | None] | None:
    """The comparison's end from its children's statuses (status → how many), with the
    error it stores; None while a child has not ended.

    Cancelled if the user asked for it; succeeded if any child succeeded (the report says
    what the others did); failed otherwise.
    """
    if any(st not in FINISHED for st in counts):
        return None
    if cancel_requested:
        status = JobStatus.CANCELLED
    elif counts.get(JobStatus.SUCCEEDED):
        status = JobStatus.SUCCEEDED
    else:
        status = JobStatus.FAILED
    bad = {k.value: v for k, v in counts.items() if k is not JobStatus.SUCCEEDED}
    error = None
    if bad:
        error = "children not succeeded: " + ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
    return status, error
