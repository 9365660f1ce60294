"""Data drift: a fast per-column summary giving the same verdicts as Evidently 0.7.23's default DataDriftPreset,
and the full Evidently HTML report on a fixed-seed sample.

The rules mirror evidently/legacy/calculations/stattests/registry.py::_get_default_stattest and the stattest
modules next to it (ks_stattest, chisquare_stattest, z_stattest, wasserstein_distance_norm, jensenshannon):

- each column is cleaned on its own: +-inf -> NaN, NaN dropped; an empty side raises ValueError (as Evidently does);
- n_values = distinct non-NaN values of reference and current together; "small" = <= 1000 cleaned reference rows;
- small: numerical with n_values > 5 -> ks; otherwise (numerical <= 5 values, or categorical) chisquare if
  n_values > 2 else z;
- large: numerical with n_values > 5 -> wasserstein (normed by the reference std, ddof=0, floored at 0.001);
  otherwise jensenshannon on category shares;
- drifted: ks p <= 0.05; chisquare / z p < 0.05; wasserstein / jensenshannon distance >= 0.1;
- dataset drift: drifted share >= drift_share.

Known Evidently quirk: its DriftedColumnsCount recomputes every column through a legacy path that skips the
+-inf cleaning on a side with no NaN: such a column is scored there with its inf values (wasserstein gives NaN,
so it is never counted as drifted), and the count can disagree with Evidently's own per-column ValueDrift
verdicts. n_drifted here counts the per-column verdicts, so it can differ from Evidently's count in that case.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ml.metrics import predict, row_loss

SMALL_REFERENCE_ROWS = 1000  # Evidently: p-value tests up to this many cleaned reference rows, distances above
MAX_DISCRETE_VALUES = 5  # numerical columns with at most this many values are tested like categorical ones

PREDICTION = "prediction"  # the column the model's point predictions are tested under
THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}
LABELS = {  # Evidently's StatTest.display_name, which it reports as the metric's `method`
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
}
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})


def drift_summary(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                  drift_share: float = 0.5) -> dict:
    """Per-column drift verdicts and the dataset verdict of Evidently's default DataDriftPreset, as plain types."""
    columns = list(numeric) + list(categorical)
    if not columns:
        raise ValueError("no columns to test for drift")
    if len(set(columns)) != len(columns):
        raise ValueError(f"a column is listed twice in numeric/categorical: {columns}")
    results = {}
    for column in columns:
        kind = "numerical" if column in numeric else "categorical"
        tester = _numerical_drift if kind == "numerical" else _categorical_drift
        if _empty(reference[column]) or _empty(current[column]):
            side = "reference" if _empty(reference[column]) else "current"
            results[column] = {"kind": kind, "method": "none", "method_label": f"no values in the {side} data",
                               "statistic": None, "p_value": None, "threshold": None, "drifted": True}
            continue
        method, score = tester(reference[column], current[column], column)
        results[column] = _column_result(kind, method, score)
    n_drifted = sum(r["drifted"] for r in results.values())
    share = n_drifted / len(columns)
    return {"columns": results, "n_columns": len(columns), "n_drifted": n_drifted, "share_drifted": share,
            "drift_share": float(drift_share), "dataset_drift": bool(share >= drift_share),
            "reference_rows": int(len(reference)), "current_rows": int(len(current))}


def _empty(series: pd.Series) -> bool:
    """No usable value at all (all null or +-inf): there is no distribution to compare, which is itself drift."""
    if pd.api.types.is_numeric_dtype(series):
        return not np.isfinite(series.to_numpy(dtype=np.float64, na_value=np.nan)).any()
    return not series.notna().any()


def _column_result(kind: str, method: str, score: float) -> dict:
    """One column's entry: Evidently's drift score is the p-value for tests, the distance otherwise."""
    score = float(score)
    return {"kind": kind, "method": method, "method_label": LABELS[method], "statistic": score,
            "p_value": score if method in P_VALUE_METHODS else None, "threshold": THRESHOLDS[method],
            "drifted": _is_drifted(method, score)}


def _is_drifted(method: str, score: float) -> bool:
    """Evidently's comparison for each method; ks is inclusive, the other p-value tests are strict."""
    threshold = THRESHOLDS[method]
    if method == "ks":
        return bool(score <= threshold)
    if method in P_VALUE_METHODS:
        return bool(score < threshold)
    return bool(score >= threshold)


# --- numerical columns -------------------------------------------------------------------------------------------

def _numerical_drift(reference: pd.Series, current: pd.Series, column: str) -> tuple[str, float]:
    """(method, drift score) for a numerical column, after Evidently's cleaning and automatic method choice."""
    ref = np.sort(_finite_values(reference, column, "reference"))
    cur = np.sort(_finite_values(current, column, "current"))
    merged, from_ref = _merge_sorted(ref, cur)
    steps = np.diff(merged)
    n_values = 1 + int(np.count_nonzero(steps))
    if n_values <= MAX_DISCRETE_VALUES:
        keys = merged[np.concatenate(([True], steps != 0))]
        ref_counts = np.searchsorted(ref, keys, "right") - np.searchsorted(ref, keys, "left")
        cur_counts = np.searchsorted(cur, keys, "right") - np.searchsorted(cur, keys, "left")
        # keys come out sorted, so keys[0] is the value Evidently's z-test takes as the "0" outcome
        return _discrete_drift(ref_counts, cur_counts, ref.size <= SMALL_REFERENCE_ROWS)
    if ref.size <= SMALL_REFERENCE_ROWS:
        from scipy.stats import ks_2samp

        return "ks", float(ks_2samp(ref, cur)[1])
    return "wasserstein", _normed_wasserstein(ref, cur, merged, from_ref, steps)


def _finite_values(series: pd.Series, column: str, side: str) -> np.ndarray:
    """Float values without NaN/+-inf; raises like Evidently on a non-numeric or empty column."""
    if not pd.api.types.is_numeric_dtype(series):
        raise ValueError(f"Column '{column}' in {side} dataset should contain numerical values only.")
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if values.size == 0:
        raise ValueError(f"An empty column '{column}' was provided for drift calculation in the {side} dataset.")
    return values


def _merge_sorted(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted arrays; also say which merged positions came from `ref`.

    A stable argsort of two concatenated sorted runs is one timsort merge, O(n): at 1M + 1M rows about half the
    time of searchsorted + scatter, and far cheaper than scipy's third full sort plus two searchsorted passes.
    """
    both = np.concatenate((ref, cur))
    order = np.argsort(both, kind="stable")
    return both[order], order < ref.size


def _normed_wasserstein(ref: np.ndarray, cur: np.ndarray, merged: np.ndarray, from_ref: np.ndarray,
                        steps: np.ndarray) -> float:
    """scipy.stats.wasserstein_distance(ref, cur) / max(std(ref), 0.001), from the already merged values.

    scipy evaluates both empirical CDFs at every merged value (searchsorted 'right'); a running count over the
    merge gives the same counts wherever the step to the next value is non-zero, and ties contribute 0 * step.
    """
    ref_cdf = np.cumsum(from_ref[:-1]) / ref.size
    cur_cdf = (np.arange(1, merged.size) - np.cumsum(from_ref[:-1])) / cur.size
    distance = float(np.vecdot(np.abs(ref_cdf - cur_cdf), steps))
    return distance / max(float(np.std(ref)), 0.001)


# --- categorical columns -----------------------------------------------------------------------------------------

def _categorical_drift(reference: pd.Series, current: pd.Series, column: str) -> tuple[str, float]:
    """(method, drift score) for a categorical column: counts per category over both sides, NaN/+-inf dropped."""
    # one hash pass over both sides gives shared category codes; bincount then counts them per side
    codes, uniques = pd.factorize(pd.concat([reference, current], ignore_index=True))
    keys = list(uniques)
    infinite = [i for i, key in enumerate(keys) if isinstance(key, (float, np.floating)) and np.isinf(key)]
    if infinite:  # Evidently replaces +-inf by NaN before dropping NaN, in categorical columns too
        codes = np.where(np.isin(codes, infinite), -1, codes)
    ref_codes, cur_codes = codes[:len(reference)], codes[len(reference):]
    ref_counts = np.bincount(ref_codes[ref_codes >= 0], minlength=len(keys))
    cur_counts = np.bincount(cur_codes[cur_codes >= 0], minlength=len(keys))
    for side, counts in (("reference", ref_counts), ("current", cur_counts)):
        if counts.sum() == 0:
            raise ValueError(f"An empty column '{column}' was provided for drift calculation in the {side} dataset.")
    seen = (ref_counts + cur_counts) > 0  # drops inf keys and unobserved pandas categories
    keys = [key for key, keep in zip(keys, seen, strict=True) if keep]
    ref_counts, cur_counts = ref_counts[seen], cur_counts[seen]
    order = sorted(range(len(keys)), key=keys.__getitem__) if len(keys) <= 2 else range(len(keys))
    order = np.fromiter(order, dtype=np.intp, count=len(keys))  # z-test: the smallest key is the "0" outcome
    return _discrete_drift(ref_counts[order], cur_counts[order], int(ref_counts.sum()) <= SMALL_REFERENCE_ROWS)


def _discrete_drift(ref_counts: np.ndarray, cur_counts: np.ndarray, small: bool) -> tuple[str, float]:
    """Method and score from per-category counts (every category seen on some side; first = smallest if 2)."""
    if not small:
        return "jensenshannon", _jensenshannon(ref_counts, cur_counts)
    if ref_counts.size > 2:
        return "chisquare", _chisquare_p(ref_counts, cur_counts)
    return "z", _z_p(ref_counts, cur_counts)


def _jensenshannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between category shares, as Evidently's get_binned_data builds them."""
    from scipy.spatial import distance

    return float(distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))


def _chisquare_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Chi-square p-value of current counts against reference counts rescaled to the current size."""
    from scipy.stats import chisquare

    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    with np.errstate(divide="ignore", invalid="ignore"):  # a category new in current: expected 0 -> p = 0
        return float(chisquare(cur_counts, expected)[1])


def _z_p(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Two-sided two-proportion z-test p-value, written as Evidently writes it (1 - cdf, not sf)."""
    from scipy.stats import norm

    if ref_counts.size == 1:  # one value on both sides: Evidently returns p = 1 without testing
        return 1.0
    n1, n2 = int(ref_counts.sum()), int(cur_counts.sum())
    p1 = float(n1 - ref_counts[0]) / n1  # share of rows that are not the smallest value
    p2 = float(n2 - cur_counts[0]) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(z))))


# --- full Evidently report ---------------------------------------------------------------------------------------

def write_drift_report(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                       html_path, *, target: str | None = None, prediction: str | None = None,
                       sample_rows: int = 100_000, seed: int = 0) -> dict:
    """Evidently DataDriftPreset HTML on <= sample_rows rows per side (fixed seed), written atomically."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # target and prediction go in as numerical columns so the report shows their drift next to the features'
    numerical = list(dict.fromkeys([*numeric, *(c for c in (target, prediction) if c is not None)]))
    numerical = [c for c in numerical if c not in categorical and not (_empty(reference[c]) or _empty(current[c]))]
    categorical = [c for c in categorical if not (_empty(reference[c]) or _empty(current[c]))]  # Evidently raises
    columns = numerical + list(categorical)
    ref_sample = _sample_rows(reference[columns], sample_rows, seed)
    cur_sample = _sample_rows(current[columns], sample_rows, seed)
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=list(categorical))
    # a column constant within the week makes Evidently's correlation plots divide by a zero spread: harmless
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur_sample, data_definition=definition),
                                                   Dataset.from_pandas(ref_sample, data_definition=definition))
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        snapshot.save_html(tmp)
        os.replace(tmp, path)  # readers never see a half-written report
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"html": str(path), "sampled_rows": {"reference": len(ref_sample), "current": len(cur_sample)}}


def _sample_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most max_rows rows drawn without replacement, kept in their original order (the report plots by index)."""
    if len(frame) <= max_rows:
        return frame
    picked = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[picked]


def residuals(model, frame: pd.DataFrame, target: str, task: str) -> np.ndarray:
    """The model's error on each row: y - prediction (regression), log loss of the true class (classification);
    NaN where the outcome is missing."""
    y = frame[target]
    known = y.notna().to_numpy()
    out = np.full(len(frame), np.nan)
    if known.any():
        rows = frame[known]
        pred = predict(model, rows, task)
        if task == "regression":
            out[known] = pd.to_numeric(rows[target], errors="coerce").to_numpy(dtype=float) - pred
        else:
            out[known] = row_loss(task, rows[target].to_numpy(), pred, getattr(model, "classes_", None))
    return out


def point_prediction(model, frame: pd.DataFrame, task: str) -> np.ndarray:
    """The model's point prediction of each row: the value (regression), the top class's probability."""
    pred = predict(model, frame, task)
    return pred if task == "regression" else pred.max(axis=1)


def column_kinds(params, *, target: bool = True, prediction: bool = False) -> dict[str, str]:
    """Columns tested together (features, then target and predictions) and how each is compared (`params`: the
    project's Params)."""
    s = params.source
    kinds = {c: "numerical" for c in s.numeric_features} | {c: "categorical" for c in s.categorical_features}
    if target:
        kinds[s.target] = "numerical" if s.task == "regression" else "categorical"
    if prediction:
        kinds[PREDICTION] = "numerical"
    return kinds
