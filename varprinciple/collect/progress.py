"""Progress of one probe: per stage, units of work with a live count and an ETA.

The probe declares its stages with their units of work and estimated seconds (from the
up-front cost plan: one timed HVP, one timed per-sample chunk); the work loops report units as
they finish through :func:`tick` (a context-local hook, so the noise sources need no extra
argument). The ETA of the probe is the remaining units of the current stage at the rate measured
in it, plus the estimates of the stages to come scaled by how far the finished stages' measured
times departed from their estimates. Shown as a tqdm bar per stage (``progress=True``; the CLI's
default on a terminal), else as log lines at INFO: one when a stage starts, one at most every
``LOG_EVERY`` seconds while it runs, one when it ends.

Before a probe whose plan exceeds :data:`LONG_PROBE_SECONDS` starts, :func:`cost_message` gives
the plan per stage (units and estimated seconds) and the cheaper settings the plan priced; the
probe logs it at WARNING, so it is seen even where INFO is not (Python's default handler shows
warnings; the CLI shows INFO and up).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable

__all__ = ["ProbeProgress", "tick", "ticking", "cost_message", "LOG_EVERY", "LONG_PROBE_SECONDS"]

logger = logging.getLogger("varprinciple.collect.probe")

#: seconds between two progress log lines of one stage (no bar)
LOG_EVERY = 10.0
#: a probe planned to take longer than this (seconds) says so, with cheaper settings, before it starts
LONG_PROBE_SECONDS = 120.0

_EIGSH = ("hessian", "blocks")
_HOOK: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("varprinciple_tick", default=None)


def tick(k: int, *, unit: str, total: int | None = None) -> None:
    """Report ``k`` finished units of work (``unit``: "samples", "draws", "HVPs"; ``total``: the
    units this piece of work will take) to the probe's progress, if one is listening."""
    hook = _HOOK.get()
    if hook is not None:
        hook(int(k), unit, total)


@contextlib.contextmanager
def ticking(hook: Callable):
    """Route :func:`tick` calls to ``hook(k, unit, total)`` for the duration."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


def _fmt(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0.0, s)
    return f"{s:.1f} s" if s < 60 else (f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.1f} h")


def cost_message(step: int, plan: dict, *, threshold: float | None = None) -> str | None:
    """The up-front cost of a probe whose planned total exceeds ``threshold`` seconds (else None):
    each stage with its units of work and estimated seconds, then the cheaper settings the plan
    priced (``plan["cheaper"]``), e.g. ``top_k = 5 (~4.1 min)``; ``threshold`` defaults to
    :data:`LONG_PROBE_SECONDS`."""
    total = plan.get("seconds_total")
    if total is None or total <= (LONG_PROBE_SECONDS if threshold is None else threshold):
        return None
    parts = []
    for name, pieces in plan["stages"].items():
        sec = sum(e or 0.0 for *_, e in pieces)
        units = ", ".join(f"{u} {unit}" for u, unit, _ in pieces if u is not None)
        parts.append(f"{name} {_fmt(sec)} ({units})" if units else f"{name} {_fmt(sec)}")
    cheaper = "; ".join(f"{c['settings']} (~{_fmt(c['seconds'])})" for c in plan.get("cheaper", []))
    return (f"probe step {step} will take about {_fmt(total)} at these settings (estimated from one timed "
            f"HVP and one per-sample chunk): " + ", ".join(parts)
            + (f". Cheaper [probe] settings: {cheaper}." if cheaper else "."))


class ProbeProgress:
    """Stages of one probe, each a list of pieces of work ``(units, unit, seconds)`` (from the
    cost plan; ``units``/``seconds`` None when unknown), shown as bars or log lines."""

    def __init__(self, step: int, *, bar: bool):
        self.step, self.bar_on = step, bar
        self.plan: dict[str, list[tuple]] = {}
        self.est_done: dict[str, float] = {}
        self.meas_done: dict[str, float] = {}
        self._stage: str | None = None
        self._piece = 0
        self._bar = None

    def set_plan(self, plan: dict[str, list[tuple]]) -> None:
        """Declare (or update) stages in the order they run."""
        self.plan.update(plan)

    @staticmethod
    def _key(stage: str | None, unit: str | None) -> str | None:
        """Work measured together: a unit, except that eigsh's products (Hessian and per-block
        stages) carry ARPACK's own work and are corrected apart from the other HVPs."""
        return f"eigsh {unit}" if stage in _EIGSH else unit

    def _correction(self, stage: str | None, unit: str | None) -> float:
        """Measured / estimated seconds of the work like ``(stage, unit)`` so far (finished
        pieces and the running one); 1 before any was measured."""
        key = self._key(stage, unit)
        est, meas = self.est_done.get(key, 0.0), self.meas_done.get(key, 0.0)
        if (self._stage is not None and key == self._key(self._stage, self._unit) and self._est and self._total
                and self._count):
            est += self._est * min(1.0, self._count / self._total)
            meas += time.perf_counter() - self._t_piece
        return meas / est if est > 0 else 1.0

    def eta(self) -> float | None:
        """Seconds left in the probe (None while some stage to come has no estimate)."""
        names = list(self.plan)
        start = names.index(self._stage) if self._stage in names else 0
        left = 0.0
        for name in names[start:]:
            pieces = self.plan[name]
            first = self._piece + 1 if name == self._stage else 0
            for units, unit, est in pieces[first:]:
                if est is None:
                    return None
                left += est * self._correction(name, unit)
        if self._stage is not None:
            left += self._piece_left()
        return left

    def _piece_left(self) -> float:
        now = time.perf_counter()
        if self._total and self._count:  # the piece's own rate, as measured
            return max(0.0, self._total - self._count) * (now - self._t_piece) / self._count
        est = self._est
        return 0.0 if est is None else max(0.0, est * self._correction(self._stage, self._unit)
                                           - (now - self._t_piece))

    @contextlib.contextmanager
    def stage(self, name: str):
        """Run one stage: show it, count its units (:func:`tick`), record its measured time."""
        self._stage, self._piece, self._done = name, 0, []
        t0 = time.perf_counter()
        self._open()
        try:
            with ticking(self._hook):
                yield self
        finally:
            self._close()
            logger.info("probe step %d: %s done in %s (%s)", self.step, name, _fmt(time.perf_counter() - t0),
                        ", ".join(self._done) or "no units counted")
            self._stage = None

    def _open(self, unit: str | None = None):
        pieces = self.plan.get(self._stage) or [(None, None, None)]
        total, p_unit, est = pieces[self._piece] if self._piece < len(pieces) else (None, None, None)
        if unit is not None and unit != p_unit:  # work the plan did not list
            total, p_unit, est = None, unit, None
        self._total, self._unit, self._est, self._count = total, p_unit or "units", est, 0
        self._t_piece = self._t_last = time.perf_counter()
        eta = self.eta()
        if self.bar_on:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=f"probe step {self.step}: {self._stage}", unit=f" {self._unit}",
                             leave=False)
            self._bar.set_postfix_str(f"probe ETA {_fmt(eta)}")
        else:
            what = f"~{total} {self._unit}" if total else self._unit
            logger.info("probe step %d: %s: %s, probe ETA %s", self.step, self._stage, what, _fmt(eta))

    def _close(self):
        dt = time.perf_counter() - self._t_piece
        self._done.append(f"{self._count} {self._unit}")
        if self._est is not None and self._count:
            key = self._key(self._stage, self._unit)
            self.est_done[key] = self.est_done.get(key, 0.0) + self._est * (
                self._count / self._total if self._total else 1.0)
            self.meas_done[key] = self.meas_done.get(key, 0.0) + dt
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _hook(self, k: int, unit: str, total: int | None) -> None:
        if unit != self._unit:  # the stage's next piece of work (e.g. dropout draws after the two-mask pass)
            self._close()
            self._piece += 1
            self._open(unit)
        if total is not None and self._count == 0:
            self._total = total
            if self._bar is not None:
                self._bar.total = total
        self._count += k
        if self._bar is not None:
            if self._total is not None and self._count > self._total:
                self._bar.total = self._count
            self._bar.update(k)
            self._bar.set_postfix_str(f"probe ETA {_fmt(self.eta())}", refresh=False)
        elif time.perf_counter() - self._t_last >= LOG_EVERY:
            self._t_last = time.perf_counter()
            of = f"/{self._total}" if self._total else ""
            logger.info("probe step %d: %s: %d%s %s, probe ETA %s", self.step, self._stage, self._count, of,
                        self._unit, _fmt(self.eta()))
