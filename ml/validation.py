"""The data contract of a weekly batch run by Great Expectations: `validate_batch` runs the suite (`ml.suite`
builds it from params + the reference weeks) and turns every failure into a sentence that names the column and the
observed numbers, so a quarantined batch explains itself. great_expectations is imported inside
`validate_batch` only: the import alone costs ~4 s.
"""
from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ml.wording import examples, fmt, interval, limit, pct, quantile_name

NUMERIC_CHECKS = ("ExpectColumnValuesToBeBetween", "ExpectColumnQuantileValuesToBeBetween")  # presuppose numbers
FLOAT_MAX = float(np.finfo(np.float64).max)  # the bound of the "finite (no ±inf)" rules
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}  # BASIC: no value counts (unused)


@dataclass(frozen=True)
class Expectation:
    """One rule of the contract: a GX expectation class name, its kwargs, and the rule in words."""

    type: str  # GX class name, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict = field(hash=False)
    description: str
    # quantile rules: each quantile's linear trend over the reference weeks, projected to the week judged
    trend: tuple = field(default=(), hash=False, compare=False)
    # quantile rules: where the other columns put the column (ml.companion); a week they explain passes
    companion: dict | None = field(default=None, hash=False, compare=False)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of one batch: pass/fail, the failures in words, and the JSON-serialisable GX result."""

    success: bool
    failures: list[str]
    n_expectations: int
    n_failed: int  # failed in GX + not run because their column is missing or duplicated
    result: dict
    excused: list[str] = field(default_factory=list)  # quantile rules failed by a column that moved with the others
    # the rules that failed on values GX judged (`ml.suite.failed_features` reads them), and how many could not be
    # judged (their column missing or doubled, or the check raised on the column's values)
    failed_rules: list[Expectation] = field(default_factory=list)
    unjudged: int = 0



# ------------------------------------------------------------------------------------------------------- validate


def validate_batch(batch: pd.DataFrame, suite: list[Expectation]) -> ValidationReport:
    """Run `suite` on `batch` with GX; failures (including expectations that raised) come back as sentences.

    Checks on a column the batch lacks (or has twice) are not run but count as failed; the column is reported once.
    """
    unusable = _unusable_columns(batch, suite)
    runnable = [(i, e) for i, e in enumerate(suite) if e.type == "ExpectColumnToExist" or e.column not in unusable]
    gx_result = _run_gx(batch, runnable) if runnable else None
    outcomes = [(r.expectation_config.meta["index"], r) for r in (gx_result.results if gx_result else [])]
    failed = sorted(((i, r) for i, r in outcomes if not r.success), key=lambda x: x[0])  # suite order: schema first
    excused = _excused(batch, suite, failed)
    failed = [(i, r) for i, r in failed if i not in excused]
    ran = {i for i, _ in runnable}
    not_run = [e for i, e in enumerate(suite) if i not in ran]
    explained = _explain_all([(suite[i], r) for i, r in failed if suite[i].column not in unusable], len(batch))
    failures = list(dict.fromkeys([*unusable.values(), *explained]))
    result = _result_dict(gx_result, [(suite[i], r) for i, r in outcomes], not_run, unusable)
    if excused:
        for entry, (i, _) in zip(result["expectations"], outcomes, strict=True):
            if i in excused:
                entry["excused"] = excused[i]
        result["excused"] = list(excused.values())
        result["success"] = not failed and not not_run
    judged = [suite[i] for i, r in failed if not _raised(r)]
    return ValidationReport(success=not failed and not not_run, failures=failures, n_expectations=len(suite),
                            n_failed=len(failed) + len(not_run), result=result, excused=list(excused.values()),
                            failed_rules=judged, unjudged=len(failed) - len(judged) + len(not_run))


def _excused(batch: pd.DataFrame, suite: list[Expectation], failed: list) -> dict[int, str]:
    """The failed quantile rules whose column moved with the other columns (`ml.companion.excuse`), each with
    the sentence that says so."""
    from ml.companion import excuse

    out = {}
    for i, r in failed:
        exp = suite[i]
        if exp.companion and exp.type == "ExpectColumnQuantileValuesToBeBetween" and not _raised(r):
            if (got := excuse(batch, exp.companion)) is not None:
                shown = ", ".join(f"{quantile_name(q)} {fmt(o)} (predicted {fmt(p)})"
                                  for q, o, p in zip(exp.companion["quantiles"], *got, strict=True))
                out[i] = (f"{explain(exp, r)}, but '{exp.column}' moved with the other columns: {shown}, each as "
                          f"far from the prediction as in the reference weeks")
    return out


def _unusable_columns(batch: pd.DataFrame, suite: list[Expectation]) -> dict[str, str]:
    """Checked columns the batch lacks or carries twice, each with its one sentence, in suite order.

    Their checks are not run: GX would raise a cryptic error for each of them instead.
    """
    checked = list(dict.fromkeys(e.column for e in suite if e.column is not None))
    counts = pd.Series(batch.columns).value_counts()
    out = {}
    for c in checked:
        if c not in counts:
            out[c] = _missing_sentence(c, batch, set(checked))
        elif counts[c] > 1:
            out[c] = f"column '{c}' appears {counts[c]} times in the batch"
    return out


def _missing_sentence(column: str, batch: pd.DataFrame, checked: set[str]) -> str:
    """'column X is missing', with the batch's likely replacement when one looks like a rename."""
    others = {str(c).lower(): str(c) for c in batch.columns if c not in checked}
    close = difflib.get_close_matches(column.lower(), list(others), n=1, cutoff=0.75)  # PM10 -> pm10 is a rename
    return f"column '{column}' is missing" + (f" (the batch has '{others[close[0]]}' instead?)" if close else "")


def _run_gx(batch: pd.DataFrame, runnable: list[tuple[int, Expectation]]):
    """Validate with a fresh ephemeral GX context (~20 ms to build, so one per call and no global state)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm "Calculating Metrics" on stderr
    # meta["index"] maps results back to the suite: GX does not return results in suite order.
    expectations = [getattr(gxe, e.type)(**e.kwargs, meta={"index": i}, description=e.description)
                    for i, e in runnable]
    gx_suite = gx.ExpectationSuite(name="batch_contract", expectations=expectations)
    gx_batch = (ctx.data_sources.add_pandas("batch").add_dataframe_asset("batch")
                .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": batch}))
    # Batch.validate, not ValidationDefinition.run: the latter stores the result and its serialiser crashes on
    # the numpy bool that ExpectColumnQuantileValuesToBeBetween returns ("Object of type bool is not JSON
    # serializable"), i.e. one quantile check would crash the whole validation.
    return gx_batch.validate(gx_suite, result_format=RESULT_FORMAT)


def _result_dict(gx_result, outcomes: list, not_run: list[Expectation], unusable: dict[str, str]) -> dict:
    """GX's describe_dict with each rule's description, plus the rules not run; guaranteed JSON-serialisable."""
    if gx_result is None:
        out: dict = {"success": True, "statistics": {}, "expectations": []}
    else:
        out = gx_result.describe_dict()
        for entry, (exp, _) in zip(out["expectations"], outcomes, strict=True):
            entry["description"] = exp.description
    out["not_run"] = [{"expectation_type": e.type, "kwargs": e.kwargs, "description": e.description,
                       "reason": unusable[e.column]} for e in not_run]
    if not_run:
        out["success"] = False
    return json.loads(json.dumps(out, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    return str(value)


# -------------------------------------------------------------------------------------------------------- explain


def _explain_all(failed: list, n_rows: int) -> list[str]:
    """One sentence per failed expectation, minus failures that merely follow from one already reported:
    numeric checks on a column of the wrong type, and undefined quantiles of an all-null column or empty batch."""
    mistyped = {e.column for e, r in failed if e.type == "ExpectColumnValuesToBeInTypeList" and not _raised(r)}
    all_null = {e.column for e, r in failed if e.type == "ExpectColumnValuesToNotBeNull" and not _raised(r)
                and (r.result or {}).get("unexpected_count") == n_rows}
    all_null |= {e.column for e, r in failed if e.type == "ExpectColumnProportionOfNonNullValuesToBeBetween"}
    return [explain(e, r) for e, r in failed
            if not (e.column in mistyped and (_raised(r) or e.type in NUMERIC_CHECKS))
            and not ((n_rows == 0 or e.column in all_null) and _no_quantiles(e, r))]


def _no_quantiles(exp: Expectation, r) -> bool:
    """A quantile check that failed only because the column had no values at all."""
    values = ((r.result or {}).get("observed_value") or {}).get("values") if not _raised(r) else None
    return exp.type == "ExpectColumnQuantileValuesToBeBetween" and bool(values) and all(_undefined(v) for v in values)


def _undefined(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _raised(r) -> bool:
    return bool(_exception_message(r))


def _exception_message(r) -> str | None:
    """The error an expectation raised, if any; GX keys exception_info by metric id when a metric failed."""
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message") or "unknown error"
    for sub in info.values():
        if isinstance(sub, dict) and sub.get("raised_exception"):
            return sub.get("exception_message") or "unknown error"
    return None


def explain(exp: Expectation, r) -> str:
    """A failed expectation in words, naming the column and the observed numbers."""
    error = _exception_message(r)
    if error:
        return f"could not check that {exp.description}: {error.splitlines()[0]}"
    res = r.result or {}
    try:
        return EXPLAIN.get(exp.type, _explain_generic)(exp, res)
    except (KeyError, TypeError, ValueError, IndexError):  # an unexpected result shape must not hide the failure
        return _explain_generic(exp, res)


def _explain_generic(exp: Expectation, res: dict) -> str:
    observed = res.get("observed_value", res.get("unexpected_percent"))
    return f"failed: {exp.description}" + (f" (observed {observed})" if observed is not None else "")


def _explain_exists(exp: Expectation, res: dict) -> str:
    return f"column '{exp.column}' is missing"


def _explain_type(exp: Expectation, res: dict) -> str:
    if "observed_value" in res:  # numpy/extension dtype: GX checks the column dtype
        return f"'{exp.column}' has dtype {res['observed_value']}, expected a numeric dtype"
    return (f"'{exp.column}' is not numeric: {pct(res['unexpected_percent'])} of values are not numbers "
            f"(e.g. {examples(res)})")


def _explain_not_null(exp: Expectation, res: dict) -> str:
    share = pct(res["unexpected_percent"])
    mostly = exp.kwargs.get("mostly")
    if mostly is None or mostly >= 1:
        return f"'{exp.column}' is null in {res['unexpected_count']:,} rows ({share}); it must never be null"
    allowed = limit((1 - mostly) * 100)
    if res["unexpected_percent"] >= 100:  # a feed empty for the week, whatever share the reference allows
        return f"'{exp.column}' is null in every row of the batch (allowed {allowed}): a broken feed?"
    return f"'{exp.column}' is null in {share} of rows (allowed {allowed})"


def _explain_between(exp: Expectation, res: dict) -> str:
    k = exp.kwargs
    if isinstance(k.get("min_value"), str) or isinstance(k.get("max_value"), str):  # the week's time span
        where = exp.description.split(" lies in ", 1)[-1]
    elif k.get("max_value") == FLOAT_MAX:
        return (f"'{exp.column}': {res['unexpected_count']:,} rows ({pct(res['unexpected_percent'])}) are ±inf, "
                f"not numbers (e.g. {examples(res)})")
    else:
        where = interval(k.get("min_value"), k.get("max_value"))
    allowed = f" (allowed {limit((1 - k['mostly']) * 100)})" if k.get("mostly") else ""
    return (f"'{exp.column}': {res['unexpected_count']:,} rows ({pct(res['unexpected_percent'])}) outside "
            f"{where}{allowed} (e.g. {examples(res)})")


def _explain_unique(exp: Expectation, res: dict) -> str:
    return (f"'{exp.column}' is duplicated: {res['unexpected_count']:,} rows ({pct(res['unexpected_percent'])}) "
            f"share their value with another row (e.g. {examples(res)})")


def _explain_row_count(exp: Expectation, res: dict) -> str:
    n, lo, hi = res["observed_value"], exp.kwargs.get("min_value"), exp.kwargs.get("max_value")
    if hi is None:
        return f"row count {n:,} is below the minimum of {lo:,} (validation.min_rows)"
    return f"row count {n:,} is outside [{lo:,} .. {hi:,}] learned from the reference weeks"


def _explain_in_set(exp: Expectation, res: dict) -> str:
    allowed = limit((1 - exp.kwargs.get("mostly", 1)) * 100)
    return (f"'{exp.column}': {pct(res['unexpected_percent'])} of rows outside the reference categories "
            f"(e.g. {examples(res)}; allowed {allowed})")


def _explain_quantiles(exp: Expectation, res: dict) -> str:
    spec, observed = exp.kwargs["quantile_ranges"], res["observed_value"]["values"]
    parts = []
    for q, (lo, hi), value in zip(spec["quantiles"], spec["value_ranges"], observed, strict=True):
        if _undefined(value):
            parts.append(f"{quantile_name(q)} undefined (no non-null values)")
        elif not lo <= value <= hi:
            parts.append(f"{quantile_name(q)} {fmt(value)} outside {interval(lo, hi)}")
    what = "target " if exp.description.startswith("target ") else ""
    trend = _continues_trend(exp, spec, observed)
    shift = " (a shift of the target well beyond its week-to-week variation)" if what and parts and not trend else ""
    return f"{what}'{exp.column}' " + "; ".join(parts or ["quantiles outside the reference's range"]) + shift + trend


def _continues_trend(exp: Expectation, spec: dict, observed: list) -> str:
    """A note when every quantile outside its range lies where the reference weeks' own trend leads: the data
    moving on rather than a break (a person can then pin a wider tolerance)."""
    if not exp.trend:
        return ""
    out = [(q, v, p) for q, (lo, hi), v, p in zip(spec["quantiles"], spec["value_ranges"], observed, exp.trend,
                                                   strict=True) if not _undefined(v) and not lo <= v <= hi]
    follows = [(v > hi and p > hi or v < lo and p < lo) and abs(v - p) <= (hi - lo) / 2
               for (q, v, p), (lo, hi) in zip(out, [r for r, v in zip(spec["value_ranges"], observed, strict=True)
                                                    if not _undefined(v) and not r[0] <= v <= r[1]], strict=True)]
    if not out or not all(follows):
        return ""
    q, _, p = out[0]
    return (f"; it continues the trend of the reference weeks (their {quantile_name(q)} leads to {fmt(p)} this "
            f"week): if the data is moving on, not broken, pin a wider tolerance in "
            f"validation.pinned.{exp.column}.quantiles")


def _explain_has_values(exp: Expectation, res: dict) -> str:
    return f"'{exp.column}' is null in every row of the batch (every reference week had values): a broken feed?"


EXPLAIN: dict[str, Callable[[Expectation, dict], str]] = {
    "ExpectColumnToExist": _explain_exists,
    "ExpectColumnValuesToBeInTypeList": _explain_type,
    "ExpectColumnValuesToNotBeNull": _explain_not_null,
    "ExpectColumnValuesToBeBetween": _explain_between,
    "ExpectColumnValuesToBeUnique": _explain_unique,
    "ExpectTableRowCountToBeBetween": _explain_row_count,
    "ExpectColumnValuesToBeInSet": _explain_in_set,
    "ExpectColumnQuantileValuesToBeBetween": _explain_quantiles,
    "ExpectColumnProportionOfNonNullValuesToBeBetween": _explain_has_values,
}
