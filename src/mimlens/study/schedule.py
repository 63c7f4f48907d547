"""The expected wall time of a set of stages, each with its budget (``stage.minutes``, expected minutes on the
machine the study or demo preset is meant for), and the remaining-time estimate the runners print. Standard
library only (``mimlens study --plan`` imports it)."""

from __future__ import annotations

PACE_AFTER = 0.05  # scale the remaining budget by the measured pace once this fraction of it has run


def ready_stages(waiting: list, unfinished: set[str]) -> list:
    """The waiting stages whose needed stages have all finished, longest budget first (ties in running order):
    starting the long stages first keeps every worker busy to the end."""
    return sorted((s for s in waiting if unfinished.isdisjoint(s.needs)), key=lambda s: -s.minutes)


def schedule_minutes(stages: list, parallel: int, after: float = 0.0) -> float:
    """Wall-clock minutes of running ``stages`` with their budgets the way the runners do: up to ``parallel`` at
    a time, each once the stages it needs have finished (:func:`ready_stages` picks which); plus ``after``
    minutes at the end. Needed stages missing from ``stages`` count as finished."""
    waiting, running, now = list(stages), [], 0.0  # running: (end, stage)
    while waiting or running:
        unfinished = {s.name for s in waiting} | {s.name for _, s in running}
        for stage in ready_stages(waiting, unfinished)[: parallel - len(running)]:
            waiting.remove(stage)
            running.append((now + stage.minutes, stage))
        if not running:
            break  # the rest wait for stages that never run
        running.sort(key=lambda r: r[0])
        now = running.pop(0)[0]
    return now + after


class Clock:
    """The remaining-time estimate: the schedule of the stages left (:func:`schedule_minutes`), scaled by how
    fast finished stages ran against their budget once ``PACE_AFTER`` of the budget has run."""

    def __init__(self, total: float, parallel: int, after: float = 0.0):
        self.total, self.parallel, self.after = total, parallel, after
        self.spent = self.budget_used = 0.0

    def finished(self, stage, seconds: float) -> None:
        self.spent += seconds / 60
        self.budget_used += stage.minutes

    def left(self, stages: list) -> str:
        measured = self.budget_used >= PACE_AFTER * self.total  # too little run yet to tell the machine's pace
        pace = self.spent / self.budget_used if measured else 1.0
        note = f" (running at {pace:.2g}x the budget)" if measured else ""
        return f"about {schedule_minutes(stages, self.parallel, self.after) * pace:.2g} min left{note}"
