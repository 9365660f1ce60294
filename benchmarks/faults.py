"""Seeded faults for a replayed year: realistic breaks that a schema check lets through (benchmarks/bench_loop.py
`--faults`). Each takes the rows of one week (or, for a redefined target, every row from that week on) and returns
them broken; which column each one hits is chosen from the params and the data, never by name:

- time shift: a time-of-day feature (integers 0-23) shifted by 5 hours, as a time-zone bug upstream does (a
  source whose only time is its time column has none);
- units: the numeric feature most correlated with the target in other units (an affine change, as °C -> °F);
- frozen: the feed stuck: every feature holds the week's first row for the whole week;
- duplicates: every row of the week delivered twice;
- target redefined (regression): from that week on the target is 1.5 x what it was.

A broken release (a clearly worse recipe pushed for one week) is not a data fault: bench_loop swaps the recipe.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("time shift", "units", "frozen", "duplicates", "target redefined")
BROKEN_RELEASE = "broken release"


def features(params) -> list[str]:
    s = params.source
    return [*s.numeric_features, *s.categorical_features]


def hour_column(params, frame: pd.DataFrame) -> str | None:
    """A numeric feature of the delivered data holding a time of day: integers within 0..23 taking at least 16
    values. Calendar columns the pipeline derives from the time column are not delivered, so not broken; a source
    whose only time is the time column (time parts combined into it) has no time shift to inject."""
    for c in params.source.numeric_features:
        v = frame[c].dropna()
        if not c.startswith("cal_") and len(v) and (v % 1 == 0).all() and v.min() >= 0 and v.max() <= 23 \
                and v.nunique() >= 16:
            return c
    return None


def units_column(params, frame: pd.DataFrame) -> str | None:
    """The numeric (non-calendar, non-hour) feature most correlated with the target, in absolute value."""
    s = params.source
    hour = hour_column(params, frame)
    cols = [c for c in s.numeric_features if not c.startswith("cal_") and c != hour and frame[c].std() > 0]
    if not cols:
        return None
    y = pd.to_numeric(frame[s.target], errors="coerce") if s.task == "regression" else \
        frame[s.target].astype("category").cat.codes
    corr = {c: abs(frame[c].corr(y, method="spearman")) for c in cols}
    return max(corr, key=lambda c: -1 if np.isnan(corr[c]) else corr[c])


def applicable(params, frame: pd.DataFrame) -> list[str]:
    kinds = []
    for k in KINDS:
        if k == "time shift" and hour_column(params, frame) is None:
            continue
        if k == "units" and units_column(params, frame) is None:
            continue
        if k == "target redefined" and params.source.task != "regression":
            continue
        kinds.append(k)
    return kinds


def inject(kind: str, rows: pd.DataFrame, params, frame: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the fault `kind` applied (the columns it hits chosen on the whole `frame`)."""
    s = params.source
    if kind == "time shift":
        c = hour_column(params, frame)
        return rows.assign(**{c: (rows[c] + 5) % 24})
    if kind == "units":
        c = units_column(params, frame)
        return rows.assign(**{c: rows[c] * 1.8 + 32})
    if kind == "frozen":
        first = rows.iloc[0]
        return rows.assign(**{c: first[c] for c in features(params) if not c.startswith("cal_")})
    if kind == "duplicates":
        return pd.concat([rows, rows], ignore_index=True)
    if kind == "target redefined":
        return rows.assign(**{s.target: rows[s.target] * 1.5})
    raise ValueError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")


def plan(weeks: list, first_decision: int, kinds: list[str], share: float = 0.1, seed: int = 0) -> dict[int, str]:
    """Week index -> fault, in about `share` of the weeks after the first decision, none adjacent to another; the
    kinds in turn (a redefined target once: it holds from then on), and one broken release mid-way."""
    rng = np.random.default_rng(seed)
    eligible = list(range(first_decision + 2, len(weeks) - 2))
    k = max(len(kinds) + 1, round(share * len(eligible)))
    chosen: list[int] = []
    for i in rng.permutation(eligible):
        if all(abs(int(i) - j) > 1 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == k:
            break
    chosen.sort()
    mid = min(chosen, key=lambda i: abs(i - len(weeks) // 2))
    out, rest = {mid: BROKEN_RELEASE}, [i for i in chosen if i != mid]
    once = [k for k in kinds if k != "target redefined"]
    for n, i in enumerate(rest):
        out[i] = once[n % len(once)] if once else kinds[0]
    if "target redefined" in kinds and rest:
        out[rest[-1]] = "target redefined"  # late in the year: the weeks after it carry the new definition
    return out
