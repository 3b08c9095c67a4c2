"""Stage accuracy against ground-truth labels (a simulator run's ``(t_ms, asset, side, stage)`` transitions).

Both the labels and the detector's stage changes are step functions of time. They are sampled once a second
over the labelled span (the first label to the end of the data): per-stage accuracy is the share of seconds
of each true stage where the detector said the same stage, with the 8x8 confusion matrix (rows: true stage,
columns: detected). Lead time per stage k is when the truth first reached stage >= k minus when the detector
did (positive: the detector was earlier); None where either never did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flushwatch.backtest.episodes import KnownEvent
from flushwatch.signals import StageChange

N_STAGES = 8
Label = tuple[int, str, str, int]  # t_ms, asset, side, stage


def read_labels(path: Path) -> list[Label]:
    """Labels from JSON: a list (or ``{"labels": [...]}``/``{"transitions": [...]}``) of ``[t_ms, asset, side,
    stage]`` or of objects with those keys; sorted by time."""
    data: Any = json.loads(path.read_text())
    if isinstance(data, dict):
        data = data.get("labels", data.get("transitions"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of (t_ms, asset, side, stage) transitions")
    out: list[Label] = []
    for item in data:
        t, asset, side, stage = (item["t_ms"], item["asset"], item["side"], item["stage"]) if isinstance(
            item, dict) else item
        out.append((int(t), str(asset).upper(), str(side).lower(), int(stage)))
    return sorted(out, key=lambda label: label[0])


def stage_at(times: np.ndarray, change_times: np.ndarray, stages: np.ndarray) -> np.ndarray:
    """The stage in force at each of ``times`` for a step function that is 0 before ``change_times[0]`` and
    ``stages[j]`` from ``change_times[j]`` on (``change_times`` sorted; at equal times the last one wins)."""
    at = np.searchsorted(change_times, times, side="right") - 1
    padded = np.concatenate([[0], stages]).astype(np.int64)
    return padded[at + 1]


def first_reach(times: np.ndarray, stages: np.ndarray, k: int) -> float | None:
    """The first of ``times`` where ``stages >= k``; None if never."""
    idx = np.flatnonzero(stages >= k)
    return float(times[idx[0]]) if idx.shape[0] else None


def known_from_labels(labels: Sequence[Label], end_ms: int) -> list[KnownEvent]:
    """The labelled episodes as known events: from each move away from stage 0 to the return to it."""
    out: list[KnownEvent] = []
    started: dict[tuple[str, str], int] = {}
    for t, asset, side, stage in labels:
        key = (asset, side)
        if stage > 0 and key not in started:
            started[key] = t
        elif stage == 0 and key in started:
            out.append(KnownEvent(f"{asset}-{side}-{started[key]}", started.pop(key) * 1_000_000, t * 1_000_000, side))
    out += [KnownEvent(f"{a}-{s}-{t}", t * 1_000_000, end_ms * 1_000_000, s) for (a, s), t in started.items()]
    return sorted(out, key=lambda e: e.start_ns)


def stage_accuracy(labels: Sequence[Label], changes: Sequence[StageChange], end_ns: int) -> dict[str, Any]:
    """Per (asset, side) labelled: ``accuracy`` per true stage, ``confusion`` (8x8 seconds), ``lead_s`` per
    stage 1-7 (positive: the detector was first), and ``seconds`` sampled. Calm after the detector's own
    stage 7 counts as 7 where the label is 7 (labels never return to calm)."""
    out: dict[str, Any] = {}
    for asset, side in sorted({(a, s) for _, a, s, _ in labels}):
        mine = [lab for lab in labels if lab[1] == asset and lab[2] == side]
        grid = np.arange(mine[0][0] / 1000, end_ns / 1e9, 1.0)
        truth = stage_at(grid, np.array([lab[0] / 1000 for lab in mine]), np.array([lab[3] for lab in mine]))
        theirs = [c for c in changes if c.asset == asset and c.side == side]
        found = stage_at(grid, np.array([c.ts / 1e9 for c in theirs]), np.array([c.stage for c in theirs]))
        # The detector closes a flushed episode after flushed_hold_s while a label stays 7 to the end: calm
        # after the detector's own 7 is the flush, finished, not a miss.
        after_flush = np.maximum.accumulate(np.where(found == 7, grid, -np.inf)) > -np.inf
        found = np.where((truth == 7) & (found == 0) & after_flush, 7, found)
        confusion = np.zeros((N_STAGES, N_STAGES), np.int64)
        np.add.at(confusion, (truth, found), 1)
        per_stage = {str(k): float(confusion[k, k] / confusion[k].sum()) for k in range(N_STAGES) if confusion[k].sum()}
        lead: dict[str, float | None] = {}
        for k in range(1, N_STAGES):
            t_true, t_found = first_reach(grid, truth, k), first_reach(grid, found, k)
            lead[str(k)] = t_true - t_found if t_true is not None and t_found is not None else None
        out[f"{asset}-{side}"] = {"seconds": int(grid.shape[0]), "accuracy": per_stage,
                                  "confusion": confusion.tolist(), "lead_s": lead}
    return out
