"""The contract's false-alarm budget: which week each learned rule would reject, and the tolerances that keep the
rules together within a share of the history's ordinary weeks.

The gate judges each week by rules learned from the weeks before it; each learned rule has a tolerance, and a week
fails the rule exactly when the tolerance it would need exceeds the one configured. `replay_contract` computes that
needed tolerance for every rule and every week of the history, so the false alarms of any choice of tolerances are
known without running the gate again; `calibrate` chooses them for the whole contract. `cli.init` calibrates on
the history it onboards (`ml.profile`), the weekly contract on the accepted weeks before each week (`ml.contract`).

Pure: frames in, tables and tolerances out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.config import ValidationConfig
from ml.suite import envelope_weeks, quantile_scale, thin_weeks

FALSE_ALARM_RATE = 0.01  # the learned rules together may reject at most this share of the history's weeks
MAX_QUANTILE_TOLERANCE = 5.0  # a quantile rule that would need a wider tolerance (in IQRs) is exempted instead
MAX_NULL_TOLERANCE = 0.25  # a null-share rule that would need more points than this is exempted instead
EXEMPT_KEY = {"nulls": "null_exempt", "quantiles": "quantile_exempt"}
STEP = {"rows": 0.05, "nulls": 0.01, "categories": 0.01, "quantiles": 0.1}  # widened tolerances round up to these
MIN_PRIOR_WEEKS = 2  # the gate learns rules once this many weeks precede a week (stages/ingest.py)

ROW_RULE = ("rows", "")  # the one row-count rule of the contract


def replay_contract(data: pd.DataFrame, weeks: pd.Series, rules: dict[str, list[str]], train_weeks: int,
                    cfg: ValidationConfig, target: str | None = None, companion: dict | None = None) -> pd.DataFrame:
    """The tolerance each learned rule would need for each week of the history to pass it.

    `rules` lists the columns of each family ("nulls", "categories", "quantiles"); the row-count rule is always
    replayed. Each week is judged as the gate judges it: against the (up to) `train_weeks` calendar weeks before
    it, once MIN_PRIOR_WEEKS of them have rows. Rows: judged weeks; columns: (family, column); a week fails a
    rule when its entry exceeds the rule's tolerance. NaN: the rule does not exist that week (e.g. no quantile
    rule for a column constant in its reference); inf: no tolerance lets the week pass (a column empty all week
    whose every reference week had values, a quantile of a week without values). The target's quantile rule is
    its median only, as in `ml.suite`. With `companion` ({"inputs", "time_column", "timezone"}) and
    `cfg.companions`, a quantile rule's need is the smaller of its own and its companion's (`ml.companion`): a
    week whose column moved with the other columns passes the gate, so it asks no widening of the rule.
    """
    w = weeks.to_numpy()
    ids = np.unique(w)
    sizes = pd.Series(w).value_counts().reindex(ids).to_numpy()
    pos = {k: i for i, k in enumerate(ids)}
    judged = [(k, [pos[r] for r in ids[(ids >= k - train_weeks) & (ids < k)]]) for k in ids]
    judged = [(k, refs) for k, refs in judged if len(refs) >= MIN_PRIOR_WEEKS]
    out: dict[tuple[str, str], list[float]] = {}
    out[ROW_RULE] = [_row_need(sizes[pos[k]], sizes[refs]) for k, refs in judged]
    for c in rules.get("nulls", []):
        nulls = pd.Series(data[c].isna().to_numpy()).groupby(w).sum().reindex(ids).to_numpy()
        out[("nulls", c)] = [_null_need(nulls[pos[k]], sizes[pos[k]], nulls[refs], sizes[refs]) for k, refs in judged]
    for c in rules.get("categories", []):
        codes, values = pd.factorize(data[c])  # -1: null
        table = np.zeros((len(ids), codes.max() + 2))
        np.add.at(table, (np.searchsorted(ids, w), codes + 1), 1)
        table = table[:, 1:]  # non-null rows per week and category
        # known: a person's values and any seen in an earlier week, the reference's among them (ml.contract adds
        # the accepted weeks' values to the reference's)
        declared = np.isin(np.asarray(values, dtype=object), list(cfg.categories.get(c, ())))
        before = np.vstack([np.zeros((1, table.shape[1])), np.cumsum(table, axis=0)[:-1]])
        out[("categories", c)] = [_category_need(table[pos[k]], before[pos[k]] + declared) for k, _ in judged]
    from threadpoolctl import threadpool_limits

    relations = _history_design(data, companion) if companion and cfg.companions else None
    # hundreds of small products and solves: BLAS threads cost 25x more than they save on them (2 cores)
    with threadpool_limits(limits=1, user_api="blas"):
        for c in rules.get("quantiles", []):
            qs = [0.5] if c == target else list(cfg.quantiles)
            x = _without(relations, c) if relations and c != target else None  # the target has no companion
            out[("quantiles", c)] = _quantile_needs(pd.to_numeric(data[c], errors="coerce").to_numpy(), w, ids,
                                                   judged, qs, x, _floor(cfg, c)) if qs else [np.nan] * len(judged)
    frame = pd.DataFrame(out, index=pd.Index([k for k, _ in judged], name="week"), dtype=float)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["family", "column"])
    return frame


def _history_design(data: pd.DataFrame, companion: dict) -> tuple | None:
    from ml.companion import history_design

    return history_design(data, companion["inputs"], companion["time_column"], companion["timezone"])


def _floor(cfg: ValidationConfig, column: str) -> float:
    """The narrowest tolerance a column's quantile rule can have: a need at or below it never fails the rule."""
    given = [t.get("quantiles") for t in (cfg.pinned.get(column, {}), cfg.column_tolerances.get(column, {}))]
    return min([cfg.quantile_tolerance, *(t for t in given if t is not None)])


def _without(relations: tuple, column: str) -> np.ndarray:
    """The design matrix that predicts `column`: every input but the column itself."""
    x, names = relations
    return x[:, [0, *(1 + j for j, n in enumerate(names) if n != column)]]


def _row_need(n: int, ref: np.ndarray) -> float:
    """Rows must lie in [min x (1 - tol), max x (1 + tol)] of the reference weeks' row counts."""
    lo, hi = float(ref.min()), float(ref.max())
    return max((lo - n) / lo, (n - hi) / hi)


def _null_need(nulls: int, size: int, ref_nulls: np.ndarray, ref_sizes: np.ndarray) -> float:
    """Null share <= reference share + tol; a week with no values fails whatever the tolerance when every
    reference week had values (`ml.suite._null_share_rule`)."""
    ref_share = ref_nulls.sum() / ref_sizes.sum()
    if ref_share >= 1:
        return np.nan
    if nulls == size and bool((ref_nulls < ref_sizes).all()) and not thin_weeks(ref_sizes):
        return np.inf
    return nulls / size - ref_share


def _category_need(week: np.ndarray, ref: np.ndarray) -> float:
    """Share of the week's (non-null) values outside the reference's categories <= tol."""
    total = week.sum()
    return float(week[ref == 0].sum() / total) if total else np.nan


def _quantile_needs(v: np.ndarray, w: np.ndarray, ids: np.ndarray, judged: list, qs: list[float],
                    x: np.ndarray | None = None, floor: float = 0.0) -> list[float]:
    """Each quantile within the reference weeks' envelope (`ml.suite._quantile_rule`) +- tol x IQR: the
    tol a week needs is its quantiles' largest distance outside the envelope, in reference IQRs; with `x` (the
    rows' relation inputs), the smaller of that and its companion's need where it exceeds `floor` (below it the
    rule passes the week anyway)."""
    from ml.companion import ReplayFit

    keep = np.isfinite(v)
    v, w = v[keep], w[keep]
    order = np.argsort(w, kind="stable")
    v, w = v[order], w[order]
    starts = np.searchsorted(w, ids)
    ends = np.searchsorted(w, ids, side="right")
    counts = ends - starts
    companion = ReplayFit(v, x[keep][order], starts, ends) if x is not None else None
    # GX's pandas quantile uses "nearest" for the check, linear for the IQR, as ml.suite learns them
    per_week = [np.quantile(v[s:e], qs, method="nearest") if e > s else None for s, e in zip(starts, ends, strict=True)]
    needs = []
    for k, refs in judged:
        i = int(np.searchsorted(ids, k))
        ref_parts = [v[starts[r]:ends[r]] for r in refs]
        ref = np.concatenate(ref_parts)
        if ref.size == 0:
            needs.append(np.nan)
            continue
        iqr = quantile_scale(ref)
        sizes = pd.Series(counts[refs], index=refs)
        env = [per_week[r] for r in envelope_weeks(sizes[sizes > 0])]
        weekly = np.array([*env, np.quantile(ref, qs, method="nearest")])
        lows, highs = weekly.min(axis=0), weekly.max(axis=0)
        if iqr == 0 and np.array_equal(lows, highs):
            needs.append(np.nan)  # constant throughout the reference: the gate has no quantile rule
            continue
        obs = per_week[i]
        if obs is None:
            needs.append(np.inf)
            continue
        dev = float(np.max(np.maximum(lows - obs, obs - highs)))
        need = dev / iqr if iqr > 0 else (np.inf if dev > 0 else 0.0)
        if companion is not None and need > floor and iqr > 0:
            need = min(need, companion.need(i, refs, list(envelope_weeks(sizes[sizes > 0])), qs, iqr))
        needs.append(need)
    return needs


@dataclass
class Calibration:
    """Tolerances of the learned rules chosen by `calibrate`, and what the replay says of them."""

    row_count_tolerance: float
    column_tolerances: dict  # {column: {family: tolerance}} where wider than the default
    null_exempt: list[str]
    quantile_exempt: list[str]
    null_tolerance: float  # every null-share rule's tolerance: the default, or the feed's outage record
    alarms: pd.Series  # judged week -> whether the calibrated contract still rejects it
    default_alarms: pd.Series  # the same with every rule at its default tolerance
    notes: list[str] = field(default_factory=list)
    reached: dict = field(default_factory=dict)  # {rule: tolerance} raised to the tail's next extreme (`tail`)

    @property
    def rate(self) -> float:
        return float(self.alarms.mean()) if len(self.alarms) else 0.0

    @property
    def default_rate(self) -> float:
        return float(self.default_alarms.mean()) if len(self.default_alarms) else 0.0


def defaults_of(cfg: ValidationConfig) -> dict[str, float]:
    return {"rows": cfg.row_count_tolerance, "nulls": cfg.null_tolerance, "categories": cfg.category_tolerance,
            "quantiles": cfg.quantile_tolerance}


def alarms(need: pd.DataFrame, tolerances: dict[tuple[str, str], float]) -> pd.DataFrame:
    """Which rule rejects which week when each rule has the given tolerance (absent rules never reject; a week
    exactly on a bound passes, as in the gate, whose bounds are rounded to 6 decimals)."""
    return pd.DataFrame({r: need[r].to_numpy() > tolerances[r] + 1e-6 for r in need.columns}, index=need.index)


def calibrate(need: pd.DataFrame, cfg: ValidationConfig, budget: float = FALSE_ALARM_RATE,
              protect: tuple[tuple[str, str], ...] = (), tail: bool = False) -> Calibration:
    """Tolerances for the learned rules such that, together, they reject at most `budget` of the replayed weeks.

    The budget is family-wise: a week counts once however many rules reject it. While the contract rejects more
    weeks than the budget allows, the week that is cheapest to let through (the smallest widening, relative to
    each rule's default tolerance, of the rules that reject it) is let through by widening exactly those rules
    to what that week needs (rounded up). Each rule thus ends at the envelope of its own week-to-week
    variation over the history, and the weeks still rejected are the history's most extreme. A quantile rule
    that would need more than MAX_QUANTILE_TOLERANCE IQRs, or a null-share rule more than MAX_NULL_TOLERANCE,
    is exempted instead: its column drifts rather than keeps a contract (a column exempt from its null share
    still must have values, and rows of a week without any still fail). Rules in `protect` (the target's
    median: a shifted target is the costliest break to miss) are widened last: the weeks they reject are the
    ones the budget keeps rejected, unless the budget cannot hold them.

    With `tail`, each quantile and row-count rule but the protected ones then reaches to where the tail of its
    replayed needs puts the next extreme (`reach_next_extremes`): the envelope of N weeks is crossed by about one
    new ordinary week in N + 1, per rule, and a contract has dozens of rules.
    """
    base = defaults_of(cfg)
    default_alarms = alarms(need, {r: base[r[0]] for r in need.columns}).any(axis=1)
    record, where = outage_record(need, skip=cfg.null_exempt)
    start = {**base, "nulls": max(base["nulls"], record)}  # every rule's tolerance before any widening
    nulls = start["nulls"]
    tol = {r: start[r[0]] for r in need.columns}
    allowed = math.floor(budget * len(need) + 1e-9)
    cost = need / pd.Series([base[r[0]] for r in need.columns], index=need.columns)
    # a quantile rule no width can satisfy (a step in a column of few values, IQR 0) is cleared by exempting it:
    # as costly as the widest tolerance allowed, so it comes after every cheaper widening
    quantile = [r for r in need.columns if r[0] == "quantiles"]
    cost[quantile] = cost[quantile].replace(np.inf, 2 * MAX_QUANTILE_TOLERANCE / base["quantiles"])
    kept = [r for r in protect if r in cost.columns]
    cost[kept] = cost[kept] + 1e6  # after any other widening (still finite: widened if nothing else can)
    _widen(need, tol, cost, allowed)
    reached = reach_next_extremes(need, tol, budget, skip=set(kept)) if tail else {}
    caps = {"quantiles": MAX_QUANTILE_TOLERANCE, "nulls": MAX_NULL_TOLERANCE}
    exempt = {r for r, t in tol.items() if r[0] in caps and t > caps[r[0]]}
    # exempt from its null share, a column must still have values (tolerance 1: only a week without any fails)
    final = {r: ((1.0 if r[0] == "nulls" else np.inf) if r in exempt else t) for r, t in tol.items()}
    widened = {}
    for (family, column), t in sorted(tol.items()):
        if (family, column) not in exempt and t > start[family] and family != "rows":
            widened.setdefault(column, {})[family] = t
    notes = _widening_notes(need, widened, exempt, base)
    if reached:
        notes.append(f"validation: {len(reached)} rule(s) reach past their replayed extreme to where its tail puts "
                     f"the next one ({', '.join(f'{c or f} {t:g}' for (f, c), t in sorted(reached.items())[:5])}"
                     f"{', ...' if len(reached) > 5 else ''})")
    rows = tol.get(ROW_RULE, base["rows"])
    if rows > base["rows"]:
        notes.append(f"validation.row_count_tolerance {rows:g} (default {base['rows']:g}): "
                     f"{_fails(need, ROW_RULE, base['rows'])} of the history's weeks would fail the default")
    if nulls > base["nulls"]:
        notes.append(f"validation.null_tolerance {nulls:g} (default {base['nulls']:g}): the feed's columns have gone "
                     f"partly null before ({where}); any column may, so each null-share rule allows that rise")
    after = alarms(need, final).any(axis=1)
    notes.append(f"validation: the learned rules together reject {after.sum()} of {len(need)} replayed weeks "
                 f"({after.mean() if len(need) else 0:.1%}; at the default tolerances {default_alarms.sum()}, "
                 f"{default_alarms.mean() if len(need) else 0:.1%}; budget {budget:.0%})")
    return Calibration(row_count_tolerance=rows, column_tolerances=widened,
                       null_exempt=sorted(c for f, c in exempt if f == "nulls"),
                       quantile_exempt=sorted(c for f, c in exempt if f == "quantiles"),
                       null_tolerance=nulls, alarms=after, default_alarms=default_alarms, notes=notes,
                       reached=reached)


TAIL_FAMILIES = ("quantiles", "rows")  # rules whose needs are distances in a scale (IQRs, row shares)
TAIL_TOP = 10  # next_extreme: the top values whose mean excess gives the tail's scale (at most a fifth of them)
# next_extreme: fewer weekly values say nothing of a tail. Twelve weeks of a Beijing station's spring, a rise
# week by week, put the next top of TEMP at 63 °C and of PM10 at 2,344: a range no unit error would cross
TAIL_MIN_WEEKS = 26


def next_extreme(values, p: float) -> float | None:
    """The level a new value of a weekly series exceeds with probability `p`, from the exponential tail of its top
    values (peaks over threshold): u, the (k+1)-th largest, plus the k largest's mean excess over u times
    ln(k / (n p)). Where the series' top values are close together the level sits near its maximum; where a few
    weeks stood far out, correspondingly further. None with fewer than TAIL_MIN_WEEKS values."""
    x = np.asarray(values, dtype=float)
    x = np.sort(x[np.isfinite(x)])[::-1]
    n = len(x)
    if n < TAIL_MIN_WEEKS:
        return None
    k = min(TAIL_TOP, n // 5)
    u = float(x[k])
    return u + float(np.mean(x[:k] - u)) * math.log(k / (n * p))


def reach_next_extremes(need: pd.DataFrame, tol: dict, budget: float,
                        skip: set = frozenset()) -> dict[tuple[str, str], float]:
    """Raise, in place, the tolerance of each quantile and row-count rule but those in `skip` (the target's
    median: the room cost most of the shifted targets caught) to its `next_extreme` at a rate of `budget` shared
    among those rules (a quantile rule at most to MAX_QUANTILE_TOLERANCE: still a rule, not exempt); return the
    rules raised and their new tolerances."""
    rules = [r for r in need.columns if r[0] in TAIL_FAMILIES and r not in skip and np.isfinite(tol[r])
             and np.isfinite(need[r].to_numpy()).any()]
    raised = {}
    for r in rules:
        level = next_extreme(need[r].to_numpy(), budget / len(rules))
        if level is None:
            continue
        if r[0] == "quantiles":
            level = min(level, MAX_QUANTILE_TOLERANCE)
        if level > tol[r] + 1e-9:
            tol[r] = raised[r] = _round_up(level, STEP[r[0]])
    return raised


def _widen(need: pd.DataFrame, tol: dict, cost: pd.DataFrame, allowed: int) -> None:
    """Widen `tol` in place, cheapest week first, until at most `allowed` weeks fail (see `calibrate`)."""
    while True:
        fires = alarms(need, tol)
        rejected = fires.any(axis=1)
        if rejected.sum() <= allowed:
            return
        week_cost = cost.where(fires).max(axis=1)[rejected]
        week_cost = week_cost[np.isfinite(week_cost)]
        if week_cost.empty:
            return  # only weeks no tolerance lets through are left
        k = week_cost.idxmin()
        for r in fires.columns[fires.loc[k].to_numpy()]:
            x = float(need.at[k, r])
            tol[r] = _round_up(x, STEP[r[0]]) if np.isfinite(x) else np.inf


def _widening_notes(need: pd.DataFrame, widened: dict, exempt: set, base: dict) -> list[str]:
    """One sentence per widened rule and per exempted one, with how many of the history's weeks the default fails."""
    notes = [f"validation.column_tolerances '{column}' {family} {t:g} (default {base[family]:g}): "
             f"{_fails(need, (family, column), base[family])} of the history's weeks would fail the default"
             for family, column, t in sorted((f, c, t) for c, fams in widened.items() for f, t in fams.items())]
    for family, column in sorted(exempt):
        cap = f"{MAX_QUANTILE_TOLERANCE:g} IQR" if family == "quantiles" else f"{MAX_NULL_TOLERANCE:.0%} points"
        notes.append(f"validation.{EXEMPT_KEY[family]} '{column}': no tolerance up to {cap} lets its ordinary weeks "
                     f"through (the default fails {_fails(need, (family, column), base[family])} of the history's "
                     f"weeks): drift, not a broken contract")
    return notes


def outage_record(need: pd.DataFrame, skip: tuple[str, ...] = ()) -> tuple[float, str]:
    """The feed's record of partial outages: the largest rise of any column's null share above its reference in
    the replayed weeks, rounded up, at most MAX_NULL_TOLERANCE, and where it was. A sensor or a source that went
    partly dark once in a feed can in any of its columns: at Beijing's stations NO2's first outage came a year
    after CO's and O3's. A week with no values at all is not a partial outage (the empty feed, never ordinary);
    columns in `skip` (`validation.null_exempt`: their nulls carry meaning, as "no gust") set no record."""
    cols = [r for r in need.columns if r[0] == "nulls" and r[1] not in skip]
    v = need[cols].where(np.isfinite(need[cols]))
    if not v.notna().to_numpy().any():
        return 0.0, ""
    column = v.max().idxmax()
    rise = float(v[column].max())
    if rise <= 0:
        return 0.0, ""
    return min(_round_up(rise, STEP["nulls"]), MAX_NULL_TOLERANCE), f"'{column[1]}' +{rise * 100:.0f} points in a week"


def _fails(need: pd.DataFrame, rule: tuple[str, str], tolerance: float) -> str:
    n = int((need[rule].to_numpy() > tolerance).sum())
    return f"{n} ({n / len(need):.1%})" if len(need) else "0"


def _round_up(x: float, step: float) -> float:
    """x rounded up to a multiple of `step` strictly above it (a week exactly at the bound passes anyway)."""
    return round(math.floor(round(x / step, 9) + 1) * step, 6)
