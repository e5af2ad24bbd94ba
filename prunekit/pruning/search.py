"""A search for the per-group allocation under a budget: start from the presets' plans at that budget, explore
around the best one, judge every candidate by its recalibrated accuracy, keep the best (EagleEye's recipe, Li et
al., ECCV 2020: many candidate allocations, each judged after adaptive BatchNorm).

>>> result = search_allocation(channels, {"uniform": u, "afie": a}, reduction, judge, 0.5, seed=0)
>>> result.best.ratios, result.best.accuracy      # the chosen allocation and its recalibrated accuracy (%)
>>> result.table()                                # every candidate tried: source, accuracy, loss, reached, ratios

The budget: ``reduction(ratios)`` is the fraction of FLOPs, parameters or predicted latency a plan removes; every
candidate reaches ``target`` or more. A candidate is a direction (each group's share of the pruning) projected
onto the budget: its ratios scaled by the one factor that reaches the target, each capped at the group's largest
ratio (:func:`project`, the bisection the presets solve a target with). A budget no plan reaches is refused
(:func:`reachable` says what can be reached: every group at its largest ratio).

The exploration (``method``): ``greedy`` (the default) moves one group's share of the best plan so far up or down
by a factor exp(2 sigma), each group in a seeded order, keeps a move that judges better and halves the factor after a
pass over every move without gain (NetAdapt's one-layer-at-a-time steps, here at a fixed budget); ``evolution``
breeds each candidate from two of the best ``population`` plans so far (each group's share taken from one parent or
the other) and mutates every share by exp(sigma N(0, 1)); ``random`` mutates every share of the best plan so far.
Measured on the bundled ResNet-20 at -50% FLOPs with l1 (benchmarks/search_methods.py, 30 candidates, seeds 0 and
1, benchmarks/results/search_methods.json): greedy's best judged 61.1 / 61.0% and kept 59.3 / 55.5% on 1,000 test
images (recalibrated), evolution's 50.8 / 51.4% (test 47.6 / 53.3%), random's 50.1 / 50.9% (test 47.2 / 48.7%),
from starts whose best judged 39.7%; so greedy is the default. Moving one group at a time keeps what already
works, where a mutation of every share at once mostly lands on a worse plan.

Judging: :func:`training_judge` prunes each candidate, recalibrates its BatchNorm and evaluates it
(:class:`~prunekit.pruning.evaluator.CandidateEvaluator`) on ``SEARCH.n`` training images that the recalibration
does not use (:func:`search_images`): the test images never choose the plan, so they stay a fair measure of it.

Stopping: after ``candidates`` judged plans (the starts included), or ``seconds``, or when ``cancel()`` turns
true, whichever comes first, with what was found so far. The same seed, budget and candidate count give the same
candidates and the same result (the time limit is the outer bound: a slower machine may stop earlier).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from prunekit.criteria.streaming import Progress, no_progress
from prunekit.data import ArraySet
from prunekit.defaults import RECALIBRATION, ROUND_TO, SEARCH
from prunekit.errors import UserError
from prunekit.models.layers import TRACE_LOCK
from prunekit.pruning.predict import evaluator_for
from prunekit.pruning.ratios import kept_channels, max_ratio

__all__ = ["Candidate", "SearchResult", "search_allocation", "project", "reachable", "check_reachable", "search_images",
           "training_judge", "candidates_frame", "METHODS"]

METHODS = SEARCH.methods
FLOOR = 0.02  # a group's least share of a direction: a start that spares a group can still learn to prune it
REDRAWS = 50  # draws that repeat a candidate already judged before the search says it has run out of new ones
STEPS = 40  # bisection steps of a projection (as the presets solve a target)

Reduction = Callable[[dict[str, float]], float]
Judge = Callable[[dict[str, float]], tuple[float, float]]


@dataclass
class Candidate:
    """One judged plan: its number in the order tried, where it came from (a preset's name or the method),
    {root: ratio}, the fraction of the budget's measure it removes, its recalibrated accuracy (%) and loss."""

    index: int
    source: str
    ratios: dict[str, float]
    reached: float
    accuracy: float
    loss: float
    seconds: float

    @property
    def score(self) -> tuple[float, float]:
        return self.accuracy, -self.loss


@dataclass
class SearchResult:
    """The best candidate, every candidate in the order tried, why it stopped ("candidates", "time", "cancelled",
    "exhausted"), its settings and the seconds it took."""

    best: Candidate
    candidates: list[Candidate]
    stopped: str
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """One row per candidate: candidate, source, accuracy, loss, reached, best (bool), seconds, then one column
        per group with its ratio."""
        return _frame([(c.index, c.source, c.accuracy, c.loss, c.reached, c is self.best, c.seconds, c.ratios)
                       for c in self.candidates])

    def record(self, roots: list[str]) -> dict[str, Any]:
        """What a plan's record keeps of the search: its settings, why it stopped, the best candidate's number
        and accuracy, and the table (rows of [source, accuracy, loss, reached, seconds, ratio per root])."""
        rows = [[c.source, round(c.accuracy, 4), round(c.loss, 6), round(c.reached, 6), round(c.seconds, 3),
                 *[round(c.ratios.get(r, 0.0), 6) for r in roots]] for c in self.candidates]
        return {**self.settings, "stopped": self.stopped, "seconds": round(self.seconds, 1),
                "best": self.best.index, "accuracy": self.best.accuracy, "judged": len(self.candidates),
                "table": {"roots": roots, "rows": rows}}


def _frame(rows: list[tuple]) -> pd.DataFrame:
    roots = list(dict.fromkeys(r for row in rows for r in row[-1]))
    return pd.DataFrame([{"candidate": i, "source": s, "accuracy": a, "loss": lo, "reached": re, "best": b,
                          "seconds": sec, **{r: ratios.get(r, 0.0) for r in roots}}
                         for i, s, a, lo, re, b, sec, ratios in rows])


def candidates_frame(record: dict[str, Any]) -> pd.DataFrame:
    """The candidates table of a searched plan's record (``plan.preset``), as :meth:`SearchResult.table`."""
    table = record.get("table") or {}
    roots, best = table.get("roots", []), record.get("best")
    return _frame([(i, row[0], row[1], row[2], row[3], i == best, row[4], dict(zip(roots, row[5:])))
                   for i, row in enumerate(table.get("rows", []))])


def reachable(channels: dict[str, int], reduction: Reduction) -> float:
    """The most any plan of these groups ({root: filters}) removes: every group at its largest ratio."""
    return reduction({r: max_ratio(c) for r, c in channels.items()})


def check_reachable(channels: dict[str, int], reduction: Reduction, target: float) -> None:
    """UserError when no plan of these groups removes ``target``, naming the nearest budget that can be reached."""
    most = reachable(channels, reduction)
    if most < target:
        raise UserError(f"no plan removes {target:.1%}: the most is {most:.1%} (every group at its largest ratio, "
                        f"exclusions kept); the nearest reachable budget is {np.floor(most * 1000) / 1000:.3f}")


def project(direction: dict[str, float], channels: dict[str, int], reduction: Reduction,
            target: float) -> dict[str, float]:
    """{root: ratio}: ``direction`` ({root: share > 0}) scaled by the least factor whose plan removes ``target``,
    each ratio capped at its group's largest (:func:`prunekit.pruning.ratios.max_ratio`). The budget must be
    reachable (:func:`reachable`)."""
    caps = {r: max_ratio(c) for r, c in channels.items()}

    def shape(t: float) -> dict[str, float]:
        return {r: min(caps[r], t * w) for r, w in direction.items()}

    lo, hi = 0.0, max(caps[r] / w for r, w in direction.items())
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reduction(shape(mid)) < target else (lo, mid)
    return {r: v for r, v in shape(hi).items() if v > 0}


def search_images(train: ArraySet, n: int = SEARCH.n, seed: int = SEARCH.seed) -> ArraySet:
    """``n`` training images drawn by ``seed`` among those the BatchNorm recalibration does not draw
    (:data:`prunekit.defaults.RECALIBRATION`): what the search judges candidates on. UserError when none is left."""
    if len(train) <= RECALIBRATION.n:
        raise UserError(f"the search judges candidates on training images the recalibration does not use, and "
                        f"{train.name} has {len(train)}, all of them recalibration's {RECALIBRATION.n}: give more")
    return train.split(RECALIBRATION.n, RECALIBRATION.seed)[1].subset(n, seed)


def training_judge(model: nn.Module, scores: dict[str, torch.Tensor], train: ArraySet, *,
                   round_to: int = ROUND_TO, n: int = SEARCH.n, seed: int = SEARCH.seed) -> Judge:
    """judge(ratios) -> (accuracy %, loss) of ``model`` pruned by ratios with ``scores``, its BatchNorm
    recalibrated on ``train``'s recalibration images, on :func:`search_images`. The evaluator is the kept one of
    :func:`prunekit.pruning.predict.evaluator_for`; each judgement holds TRACE_LOCK (safe in a page's thread)."""
    input_size = tuple(train.images.shape[1:])
    with TRACE_LOCK:
        ev = evaluator_for(model, input_size, held_out=search_images(train, n, seed), train=train)

    def judge(ratios: dict[str, float]) -> tuple[float, float]:
        with TRACE_LOCK:
            r = ev.evaluate(ratios, scores, round_to=round_to)
        return r["accuracy"], r["loss"]
    return judge


class _Explorer:
    """Draws directions ({root: share}) from the candidates judged so far, by one method and one seeded rng."""

    def __init__(self, method: str, roots: list[str], rng: np.random.Generator, sigma: float, population: int):
        self.method, self.roots, self.rng, self.sigma, self.population = method, roots, rng, sigma, population
        self.step, self.moves, self.failed = 2 * sigma, [], 0

    def _shares(self, c: Candidate) -> np.ndarray:
        return np.array([max(c.ratios.get(r, 0.0), FLOOR) for r in self.roots])

    def draw(self, judged: list[Candidate], best: Candidate) -> dict[str, float]:
        if self.method == "random":
            w = self._shares(best) * np.exp(self.sigma * self.rng.standard_normal(len(self.roots)))
        elif self.method == "evolution":
            top = sorted(judged, key=lambda c: c.score, reverse=True)[:self.population]
            a, b = (top[i] for i in self.rng.choice(len(top), size=2, replace=len(top) < 2))
            w = np.where(self.rng.random(len(self.roots)) < 0.5, self._shares(a), self._shares(b))
            w = w * np.exp(self.sigma * self.rng.standard_normal(len(self.roots)))
        else:
            w = self._greedy(best)
        return dict(zip(self.roots, w.tolist()))

    def _greedy(self, best: Candidate) -> np.ndarray:
        """One group's share of the best plan moved up or down by exp(step); after a pass over every move without
        a better plan, the step halves."""
        if not self.moves:
            self.moves = [(int(i), s) for i in self.rng.permutation(len(self.roots)) for s in (1, -1)]
        i, sign = self.moves.pop()
        w = self._shares(best)
        w[i] *= np.exp(sign * self.step)
        return w

    def judged(self, improved: bool) -> None:
        if self.method != "greedy":
            return
        self.failed = 0 if improved else self.failed + 1
        if self.failed >= 2 * len(self.roots):
            self.step, self.failed, self.moves = self.step / 2, 0, []


def search_allocation(channels: dict[str, int], starts: dict[str, dict[str, float]], reduction: Reduction,
                      judge: Judge, target: float, *, round_to: int = ROUND_TO, seed: int = SEARCH.seed,
                      candidates: int = SEARCH.candidates, seconds: float = SEARCH.seconds,
                      method: str = SEARCH.method, sigma: float = SEARCH.sigma, population: int = SEARCH.population,
                      progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                      on_candidate: Callable[[Candidate], None] | None = None) -> SearchResult:
    """Search the allocation of the groups ``channels`` ({root: filters}) that removes ``target`` of
    ``reduction``'s measure with the best ``judge`` (accuracy, then loss).

    starts: {name: ratios} judged first, in order (the presets' plans at this budget; each must reach it). Then
    ``method`` explores until ``candidates`` plans are judged, ``seconds`` pass or ``cancel()`` is true. round_to:
    the plans' rounding (two candidates keeping the same widths are one). progress: ``progress(judged,
    candidates)``; on_candidate: called with each :class:`Candidate` as it is judged. UserError for an unknown
    method, a budget no plan reaches (naming the most that can be reached), or no start."""
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    check_reachable(channels, reduction, target)
    if not starts:
        raise UserError("the search needs at least one plan to start from")
    roots, rng = list(channels), np.random.default_rng(seed)
    state = _State(channels, reduction, judge, target, round_to, candidates, seconds, progress or no_progress,
                   cancel or (lambda: False), on_candidate)
    for name, ratios in starts.items():
        if state.stop():
            break
        state.try_plan(name, ratios)
    explorer = _Explorer(method, roots, rng, sigma, population)
    while state.judged and not state.stop():
        drawn = (project(explorer.draw(state.judged, state.best), channels, reduction, target)
                 for _ in range(REDRAWS))
        ratios = next((r for r in drawn if state.is_new(r)), None)
        if ratios is None:
            state.stopped = "exhausted"
            break
        before = state.best
        state.try_plan(method, ratios)
        explorer.judged(state.best is not before)
    if not state.judged:
        raise UserError("the search was stopped before it judged any plan")
    settings = {"method": method, "seed": seed, "candidates": candidates, "seconds_limit": seconds,
                "sigma": sigma, "population": population, "starts": list(starts)}
    return SearchResult(state.best, state.judged, state.stopped, settings, time.monotonic() - state.t0)


class _State:
    """The candidates judged so far, the best, the kept widths seen, and the stopping rule."""

    def __init__(self, channels, reduction, judge, target, round_to, candidates, seconds, progress, cancel,
                 on_candidate):
        self.channels, self.reduction, self.judge, self.target = channels, reduction, judge, target
        self.round_to, self.limit, self.seconds = round_to, candidates, seconds
        self.progress, self.cancel, self.on_candidate = progress, cancel, on_candidate
        self.judged: list[Candidate] = []
        self.best: Candidate | None = None
        self.seen: set[tuple[int, ...]] = set()
        self.stopped, self.t0 = "candidates", time.monotonic()

    def widths(self, ratios: dict[str, float]) -> tuple[int, ...]:
        return tuple(kept_channels(c, ratios.get(r, 0.0), self.round_to) for r, c in self.channels.items())

    def is_new(self, ratios: dict[str, float]) -> bool:
        return self.widths(ratios) not in self.seen

    def stop(self) -> bool:
        if self.cancel():
            self.stopped = "cancelled"
        elif len(self.judged) >= self.limit:
            self.stopped = "candidates"
        elif self.judged and time.monotonic() - self.t0 >= self.seconds:
            self.stopped = "time"
        else:
            return False
        return True

    def try_plan(self, source: str, ratios: dict[str, float]) -> None:
        """Judge ``ratios`` unless a plan keeping the same widths was judged."""
        if not self.is_new(ratios):
            return
        self.seen.add(self.widths(ratios))
        reached = self.reduction(ratios)
        if reached < self.target - 1e-9:
            raise UserError(f"the {source} plan removes {reached:.1%}, short of the budget {self.target:.1%}")
        t0 = time.monotonic()
        accuracy, loss = self.judge(ratios)
        c = Candidate(len(self.judged), source, dict(ratios), reached, float(accuracy), float(loss),
                      time.monotonic() - t0)
        self.judged.append(c)
        if self.best is None or c.score > self.best.score:
            self.best = c
        self.progress(len(self.judged), self.limit)
        if self.on_candidate is not None:
            self.on_candidate(c)
