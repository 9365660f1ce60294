"""The data contract of one week: structural rules fixed in params, value rules that follow the accepted weeks.

Structural rules stay as configured until a person changes them: the columns and their types, finite numbers,
required columns, unique ids, the row floor, the physical bounds in `validation.ranges` (a count >= 0), the
exemptions, and tolerances pinned in `validation.pinned`. Value rules are learned for each week from the weeks
before it that the gate accepted: their reference (the window's row counts, category sets, null shares and
quantiles, the target's median: `ml.suite`) and, here, their tolerances and value ranges, calibrated on the
last `validation.learn_weeks` accepted weeks so that together they would have rejected at most
`validation.false_alarm_rate` of them. A trend or a season thus moves the rules with the data, while a jump within
one week (a unit change, a shifted target, an empty feed) still falls far outside what any accepted week needed.

Pure: frames and configs in, a `Contract` out; `build_suite(..., contract.validation, ...)` builds the week's suite.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from ml.config import SourceConfig, ValidationConfig
from ml.split import week_bounds
from ml.suite import WEEK, companion_inputs, numeric_columns, tolerance

MIN_LEARN_WEEKS = 8  # fewer judged accepted weeks than this: the configured tolerances stand alone
STALE_WEEKS = 4  # a window whose newest week is this much older than the week judged: its quantiles are not held
# weeks before a week at the start of the history that its quantile rules need: their range spans the reference
# weeks' own quantiles, and a few weeks span too little of a moving series: two weeks of daily stock returns (10
# rows) quarantined the history's third week on two columns (S&P 500 returns, 2013); the weekly median price of
# Brent crude (1987) and of Microsoft's shares (1986) wandered past the range of the 4-7 weeks before it. The
# null-share, category and row rules learn from two weeks: an empty feed needs no long history to be seen
MIN_QUANTILE_WEEKS = 8
MAX_WEEK_ROWS = 2000  # learning reads at most this many rows of a week (a fixed-seed sample): ~2 s a week on a
#                       year of a 7,000-row-a-week feed instead of ~5; the gate itself judges every row


@dataclass
class Contract:
    """The rules a week is judged by, and where the learned ones came from."""

    validation: ValidationConfig  # the effective config: params + what was learned (build_suite reads it)
    learned_from: list[str] = field(default_factory=list)  # as_of keys of the accepted weeks learned from
    widened: dict = field(default_factory=dict)  # {column: {family: tolerance}} wider than params say
    exempt: dict = field(default_factory=dict)  # {family: [columns]} the accepted weeks showed drift, not a contract
    ranges_widened: dict = field(default_factory=dict)  # {column: [min, max]} wider than params' to follow the data
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # time spent learning

    def to_json(self) -> dict:
        v = self.validation
        return {"learned_from": self.learned_from, "widened": self.widened, "exempt": self.exempt,
                "ranges_widened": self.ranges_widened, "row_count_tolerance": v.row_count_tolerance,
                "null_tolerance": v.null_tolerance, "categories": v.categories,
                "pinned": v.pinned, "range_tolerance": v.range_tolerance, "tail_room": v.tail_room,
                "ranges": v.ranges, "required": list(v.required), "min_rows": v.min_rows,
                "null_exempt": list(v.null_exempt), "quantile_exempt": list(v.quantile_exempt),
                "notes": self.notes, "seconds": round(self.seconds, 3)}


def value_rules(cfg: SourceConfig, vcfg: ValidationConfig) -> dict[str, list[str]]:
    """The columns of each learned rule family, as `ml.suite` builds them."""
    from ml.suite import never_null_columns

    never_null = set(never_null_columns(cfg, vcfg))
    calendar = {f"cal_{c}" for c in cfg.calendar}
    classes = [cfg.target] if cfg.task == "classification" else []
    return {"nulls": [c for c in (*cfg.features, cfg.target) if c not in never_null and c not in calendar],
            "categories": [*cfg.categorical_features, *classes],
            "quantiles": [c for c in numeric_columns(cfg) if c not in calendar and c not in vcfg.quantile_exempt]}


def accepted_history(frame: pd.DataFrame, time_column: str, as_of: date, weeks: int,
                     rejected: set[date] | frozenset = frozenset()) -> pd.DataFrame:
    """Rows of the `weeks` weeks before the week ending at `as_of`, without the weeks the gate rejected."""
    start = week_bounds(as_of)[0]
    t = frame[time_column]
    rows = frame[(t >= start - weeks * WEEK) & (t < start)]
    if rejected and len(rows):
        offsets = np.floor((rows[time_column] - start) / WEEK).astype(int).to_numpy()
        bad = {int((w - as_of).days // 7) for w in rejected}  # offsets of the rejected weeks' as_of keys
        rows = rows[~np.isin(offsets, list(bad))]
    return rows.reset_index(drop=True)


def learn_contract(cfg: SourceConfig, vcfg: ValidationConfig, history: pd.DataFrame, as_of: date,
                   train_weeks: int) -> Contract:
    """The contract of the week ending at `as_of`, its value rules calibrated on `history` (the accepted rows of
    the weeks before it, `accepted_history`)."""
    import time

    from ml.budget import calibrate, replay_contract

    began = time.perf_counter()
    if vcfg.learn_weeks == 0 or history.empty:
        return Contract(validation=vcfg, notes=["value rules: nothing accepted to learn from; params alone"])
    start = week_bounds(as_of)[0]
    rules = value_rules(cfg, vcfg)
    known = _known_categories(history, rules["categories"], vcfg)
    weeks = pd.Series(np.floor((history[cfg.time_column] - start) / WEEK).astype(int).to_numpy())
    sizes = weeks.value_counts()
    if (sizes > MAX_WEEK_ROWS).any():  # rank rows at random within their week, keep the first MAX_WEEK_ROWS
        rank = pd.Series(np.random.default_rng(0).random(len(weeks))).groupby(weeks.to_numpy()).rank(method="first")
        history = history[(rank <= MAX_WEEK_ROWS).to_numpy()].reset_index(drop=True)
        weeks = weeks[(rank <= MAX_WEEK_ROWS).to_numpy()].reset_index(drop=True)
        sizes = weeks.value_counts()
    full = sizes.index[sizes >= min(vcfg.min_rows, MAX_WEEK_ROWS)]
    keep = weeks.isin(full).to_numpy()
    data, weeks = history[keep].reset_index(drop=True), weeks[keep].reset_index(drop=True)
    learned_from = sorted((as_of + timedelta(days=7 * int(k))).isoformat() for k in weeks.unique())
    relations = {"inputs": companion_inputs(cfg), "time_column": cfg.time_column, "timezone": cfg.timezone}
    need = replay_contract(data, weeks, rules, train_weeks, vcfg, target=cfg.target,
                           companion=relations) if len(data) else None
    if need is None or len(need) < MIN_LEARN_WEEKS:
        v = dataclasses.replace(vcfg, column_tolerances=_pin(vcfg, vcfg.column_tolerances), categories=known)
        return Contract(validation=v, learned_from=learned_from, seconds=time.perf_counter() - began,
                        notes=[f"value rules: {0 if need is None else len(need)} accepted week(s) to calibrate on "
                               f"(fewer than {MIN_LEARN_WEEKS}): the configured tolerances"])
    cal = calibrate(need, vcfg, budget=vcfg.false_alarm_rate, protect=(("quantiles", cfg.target),),
                    tail=vcfg.tail_room == "all")
    merged = _merge(vcfg, cal.column_tolerances)
    exempt = {"nulls": [c for c in cal.null_exempt if not _is_pinned(vcfg, c, "nulls")],
              "quantiles": [c for c in cal.quantile_exempt if not _is_pinned(vcfg, c, "quantiles")]}
    widened = {c: {f: t for f, t in fams.items() if t > tolerance(vcfg, f, c)} for c, fams in merged.items()}
    widened = {c: f for c, f in widened.items() if f}
    wider = _wider_ranges(vcfg, data, cfg.target, weeks) if vcfg.learn_ranges else {}
    v = dataclasses.replace(
        vcfg, column_tolerances=_pin(vcfg, merged), ranges={**vcfg.ranges, **wider},
        null_tolerance=max(vcfg.null_tolerance, cal.null_tolerance),
        categories=known,
        row_count_tolerance=max(vcfg.row_count_tolerance, cal.row_count_tolerance),
        null_exempt=tuple(dict.fromkeys([*vcfg.null_exempt, *exempt["nulls"]])),
        quantile_exempt=tuple(dict.fromkeys([*vcfg.quantile_exempt, *exempt["quantiles"]])))
    rejected = int(cal.alarms.sum())
    notes = [f"value rules learned from {len(learned_from)} accepted week(s) "
             f"{learned_from[0]}..{learned_from[-1]}: together they reject {rejected} of the {len(need)} replayed "
             f"({rejected / len(need):.1%}; budget {vcfg.false_alarm_rate:.0%}); {len(widened)} column(s) widened, "
             f"{sum(map(len, exempt.values()))} exempt, {len(wider)} range(s) widened"]
    return Contract(validation=v, learned_from=learned_from, widened=widened, exempt=exempt, notes=notes,
                    ranges_widened=wider, seconds=time.perf_counter() - began)


def _known_categories(history: pd.DataFrame, columns: list[str], vcfg: ValidationConfig) -> dict[str, list]:
    """Per category column, a person's known values (`validation.categories`) and those of the accepted weeks: a
    value the gate let through in the last `learn_weeks` weeks is not an unknown category when it comes back."""
    out = {c: list(v) for c, v in vcfg.categories.items()}
    for c in columns:
        if c in history.columns:
            seen = history[c].dropna().unique().tolist()
            out[c] = sorted({*out.get(c, ()), *seen}, key=str)
    return out


def hold_window(contract: Contract, cfg: SourceConfig, age_weeks: int) -> Contract:
    """The contract of a week whose window's newest data is `age_weeks` older than it (the feed was silent): from
    STALE_WEEKS on, the window's quantiles are another season's and are not held against the week (held, the first
    week after a long outage fails them, is never landed, and no later week can land either). Structural rules,
    ranges, the row count, null shares and categories still hold."""
    if age_weeks < STALE_WEEKS:
        return contract
    return _without_quantiles(contract, cfg, f"the window's newest data is {age_weeks} week(s) older than this week "
                                             f"(the feed was silent)")


def short_history(contract: Contract, cfg: SourceConfig, weeks_before: int, window: int) -> Contract:
    """The contract of a week at the start of the history, with `weeks_before` weeks before it: with fewer than
    MIN_QUANTILE_WEEKS (or the `window`, when shorter) its quantiles are not held against it; the other rules are."""
    need = min(MIN_QUANTILE_WEEKS, window)
    if weeks_before >= need:
        return contract
    return _without_quantiles(contract, cfg, f"{weeks_before} week(s) before this one at the start of the history "
                                             f"(fewer than {need}): the range of so few weeks' quantiles is too narrow")


def _without_quantiles(contract: Contract, cfg: SourceConfig, why: str) -> Contract:
    """`contract` with every numeric column's quantile rule exempt, and a note that says why."""
    v = contract.validation
    contract.validation = dataclasses.replace(v, quantile_exempt=tuple(
        dict.fromkeys([*v.quantile_exempt, *numeric_columns(cfg)])))
    contract.notes.insert(0, f"value rules: {why}: its quantiles are not held against this week; the structural "
                             f"rules, ranges, row count, null shares and categories still are")
    return contract


def _is_pinned(vcfg: ValidationConfig, column: str, family: str) -> bool:
    return family in vcfg.pinned.get(column, {})


def _merge(vcfg: ValidationConfig, learned: dict) -> dict:
    """Per column and family, the wider of params' tolerance and the learned one."""
    out = {c: dict(f) for c, f in vcfg.column_tolerances.items()}
    for column, fams in learned.items():
        for family, t in fams.items():
            out.setdefault(column, {})[family] = max(t, tolerance(vcfg, family, column))
    return out


def _pin(vcfg: ValidationConfig, tolerances: dict) -> dict:
    """`validation.pinned` over everything else: a person's tolerance is used exactly."""
    out = {c: dict(f) for c, f in tolerances.items()}
    for column, fams in vcfg.pinned.items():
        out.setdefault(column, {}).update(fams)
    return out


def _wider_ranges(vcfg: ValidationConfig, data: pd.DataFrame, target: str, weeks: pd.Series) -> dict[str, list]:
    """`validation.ranges` widened, never narrowed, to the accepted weeks' extremes +-
    `ml.first_contract.range_room`: a level that grows week by week moves its range with it; a bound a column never
    crossed in the accepted weeks (a count >= 0) stays where it is. With `validation.tail_room` "ranges" or
    "all", a top also reaches to where the weekly maxima's tail puts the next one
    (`ml.budget.next_extreme`, at the budget shared among the ranges' bounds, two a range): a pollutant's record
    stands a year, then a winter hour breaks it."""
    from ml.budget import next_extreme
    from ml.first_contract import range_room, round_bound

    out = {}
    for c, bounds in vcfg.ranges.items():
        if c not in data.columns or not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            continue
        col = pd.to_numeric(data[c], errors="coerce")
        v = col.to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size < 10:
            continue
        lo, hi = bounds
        margin = range_room(v, c, target)
        new_lo = lo if lo is None or lo == 0 else min(lo, round_bound(v.min() - margin, math.floor))
        if lo is not None and lo > 0:
            new_lo = max(new_lo, 0)  # a positive floor may come down with the data, never below 0
        new_hi = hi if hi is None else max(hi, round_bound(v.max() + margin, math.ceil))
        if vcfg.tail_room in ("ranges", "all") and hi is not None:
            tops = col.groupby(weeks.to_numpy()).max().to_numpy()  # next_extreme drops the non-finite
            level = next_extreme(tops, vcfg.false_alarm_rate / (2 * len(vcfg.ranges)))
            if level is not None and math.isfinite(level):
                new_hi = max(new_hi, round_bound(level, math.ceil))
        if [new_lo, new_hi] != list(bounds):
            out[c] = [new_lo, new_hi]
    return out
