"""Statistics for champion vs candidate on the same rows: paired block bootstrap of the relative change in
mean loss, and per-slice changes for guardrails."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Comparison:
    """Candidate vs champion on the same rows. rel_change < 0 means the candidate's loss is lower."""

    champion: float  # mean loss
    candidate: float
    rel_change: float  # candidate / champion - 1
    ci_low: float
    ci_high: float
    confidence: float
    rows: int
    clusters: int  # resampling units (e.g. departure hours); == rows when rows are resampled one by one

    @property
    def empty(self) -> bool:
        """The candidate predicts every row as the champion does (its recipe on its data): nothing is compared."""
        return self.rel_change == 0 and self.ci_low == 0 and self.ci_high == 0

    @property
    def has_interval(self) -> bool:
        """At least two resampling units: one row or one block has no spread to draw an interval from."""
        return self.clusters >= 2

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(champion_loss: np.ndarray, candidate_loss: np.ndarray, clusters: np.ndarray | None = None, *,
                     confidence: float = 0.95, samples: int = 2000, seed: int = 0) -> Comparison:
    """Percentile CI of candidate/champion - 1 in mean loss, resampling whole clusters (pairs stay together).

    Rows in one cluster (one departure hour: same weather, same ground stop) have correlated errors, so
    resampling rows one by one would make the interval too narrow.
    """
    a = np.asarray(champion_loss, dtype=np.float64)
    b = np.asarray(candidate_loss, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two equal, non-empty loss vectors; got {a.shape} and {b.shape}")
    if clusters is None:
        codes, k = np.arange(a.size), a.size
    else:
        codes, uniques = pd.factorize(np.asarray(clusters), sort=True)
        k = len(uniques)
    sum_a = np.bincount(codes, weights=a, minlength=k)
    sum_b = np.bincount(codes, weights=b, minlength=k)
    rng = np.random.default_rng(seed)
    ratios = np.empty(samples)
    for start in range(0, samples, 256):  # chunks keep memory flat for row-level resampling
        n = min(256, samples - start)
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=n).astype(np.float64)
        ratios[start:start + n] = (counts @ sum_b) / np.maximum(counts @ sum_a, 1e-12) - 1.0
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return Comparison(champion=float(a.mean()), candidate=float(b.mean()), rel_change=float(b.mean() / a.mean() - 1)
                      if a.mean() else 0.0, ci_low=float(lo), ci_high=float(hi), confidence=confidence,
                      rows=int(a.size), clusters=int(k))


def slice_changes(values: np.ndarray, champion_loss: np.ndarray, candidate_loss: np.ndarray, column: str,
                  min_rows: int) -> list[dict]:
    """Per value of a slice column: rows, both mean losses, relative change, and whether it is large enough to
    be enforced by the guardrail. Largest slices first."""
    df = pd.DataFrame({"s": pd.Series(values).astype(str).to_numpy(), "a": champion_loss, "b": candidate_loss})
    g = df.groupby("s", sort=False).agg(rows=("a", "size"), champion=("a", "mean"), candidate=("b", "mean"))
    g = g.sort_values("rows", ascending=False, kind="stable")
    out = []
    for name, r in g.iterrows():
        rel = float(r.candidate / r.champion - 1) if r.champion else 0.0
        out.append({"column": column, "slice": str(name), "rows": int(r.rows), "champion": float(r.champion),
                    "candidate": float(r.candidate), "rel_change": rel, "enforced": bool(r.rows >= min_rows)})
    return out


def time_blocks(times: pd.Series, hours: int) -> np.ndarray:
    """Index of the contiguous `hours`-long block each time falls in, counted from the earliest time."""
    if hours < 1:
        raise ValueError(f"block length must be at least 1 hour, got {hours}")
    t = pd.to_datetime(times, utc=True)
    return ((t - t.min()) // pd.Timedelta(hours=hours)).to_numpy()


def resampling_units(frame: pd.DataFrame, policy, time_column: str | None = None) -> np.ndarray | None:
    """The block bootstrap's unit for each row: `policy.cluster_column` when set, else contiguous
    `policy.block_hours` blocks of `time_column`, else None (rows one by one)."""
    if policy.cluster_column:
        return frame[policy.cluster_column].to_numpy()
    if time_column:
        return time_blocks(frame[time_column], policy.block_hours)
    return None


def compare_losses(champion_loss: np.ndarray, candidate_loss: np.ndarray, holdout: pd.DataFrame, policy,
                   seed: int = 0, *, time_column: str | None = None) -> tuple[Comparison, list[dict]]:
    """The policy's evidence for one holdout: clustered paired CI + per-slice changes (flow and benchmarks).

    Resampling unit: `policy.cluster_column` when set; else contiguous blocks of `policy.block_hours` of
    `time_column` (hourly series are autocorrelated, so single rows would make the interval too narrow); rows
    only when neither is given."""
    clusters = resampling_units(holdout, policy, time_column)
    comp = paired_bootstrap(champion_loss, candidate_loss, clusters, confidence=policy.confidence,
                            samples=policy.bootstrap_samples, seed=seed)
    slices = [row for col in policy.slice_columns
              for row in slice_changes(holdout[col].to_numpy(), champion_loss, candidate_loss, col,
                                       policy.min_slice_rows)]
    return comp, slices
