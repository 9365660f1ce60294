"""A row path without pandas for the project's fitted pipelines (serving's hot path).

`compile_rows(model)` turns a fitted `FeatureFrame -> ColumnTransformer -> estimator` pipeline into a function
from JSON-like rows (dicts; None for a missing value) to predictions. Each transformer's learned parameters are
read once by asking the fitted transformer itself (a category's code or one-hot block is what its own
`transform` gives), so the path computes what the pipeline computes; the estimator gets a float64 matrix and,
for gradient boosting, its trees are called one thread, no re-validation. Structures it does not know (the MLP,
a custom step) give None: the caller keeps the pipeline. `agreement` checks the two paths on real rows; a
caller uses the fast one only when they agree within `tolerance` (1e-6).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.features import MISSING, FeatureFrame

UNSEEN = "__ct_unseen_category__"


@dataclass(frozen=True)
class _Block:
    """How one ColumnTransformer entry turns rows into its output columns."""

    kind: str  # "numeric" | "lookup"
    columns: tuple[str, ...]
    width: int
    fill: np.ndarray | None = None  # numeric: NaN -> fill (imputer statistics), or None to keep NaN
    center: np.ndarray | None = None  # numeric: (x - center) / scale
    scale: np.ndarray | None = None
    table: dict[str, np.ndarray] | None = None  # lookup: category -> output vector
    unknown: np.ndarray | None = None  # lookup: output for a category not in table


class RowPath:
    """rows -> the final estimator's input matrix -> predictions (regression) or probabilities (classifier)."""

    def __init__(self, blocks: list[_Block], n_out: int, predict: Callable[[np.ndarray], np.ndarray] | None,
                 proba: Callable[[np.ndarray], np.ndarray] | None, kind: str, order: np.ndarray | None = None,
                 features: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())):
        self.blocks, self.n_out, self._predict, self._proba, self.kind = blocks, n_out, predict, proba, kind
        self.order = order  # a column permutation the estimator applies to its input, or None
        self.numeric, self.categorical = features

    def matrix(self, rows: list[dict[str, Any]]) -> np.ndarray:
        X = np.empty((len(rows), self.n_out), dtype=np.float64)
        j = 0
        for b in self.blocks:
            if b.kind == "numeric":
                vals = np.array([[np.nan if r[c] is None else r[c] for c in b.columns] for r in rows],
                                dtype=np.float64)
                if b.fill is not None:
                    vals = np.where(np.isnan(vals), b.fill, vals)
                if b.center is not None:
                    vals = (vals - b.center) / b.scale
                X[:, j:j + b.width] = vals
            else:
                col = b.columns[0]
                for i, r in enumerate(rows):
                    v = r[col]
                    key = MISSING if v is None else str(v)
                    X[i, j:j + b.width] = b.table.get(key, b.unknown)
            j += b.width
        return X if self.order is None else X[:, self.order]

    def predict(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return self._predict(self.matrix(rows))

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        if self._proba is None:
            raise TypeError("not a classifier")
        return self._proba(self.matrix(rows))


def _numeric_block(columns: list[str], transformer) -> _Block | None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    steps = [transformer] if not isinstance(transformer, Pipeline) else [s for _, s in transformer.steps]
    fill = center = scale = None
    for step in steps:
        if isinstance(step, str) and step == "passthrough" or (
                isinstance(step, FunctionTransformer) and step.func is None and step.inverse_func is None):
            continue  # identity ("passthrough" is fitted as an identity FunctionTransformer)
        if isinstance(step, SimpleImputer) and step.strategy in ("median", "mean", "constant") \
                and not step.add_indicator and center is None and fill is None:
            fill = np.asarray(step.statistics_, dtype=np.float64)
        elif isinstance(step, StandardScaler) and center is None:
            center = step.mean_ if step.with_mean else np.zeros(len(columns))
            scale = step.scale_ if step.with_std else np.ones(len(columns))
            center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        else:
            return None
    return _Block("numeric", tuple(columns), len(columns), fill, center, scale)


def _lookup_blocks(columns: list[str], encoder) -> list[_Block] | None:
    """One block per categorical column: every known category's output, read from the encoder's transform."""
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if not isinstance(encoder, (OneHotEncoder, OrdinalEncoder)):
        return None
    base = {c: cats[0] for c, cats in zip(columns, encoder.categories_, strict=True)}
    out = np.asarray(encoder.transform(pd.DataFrame([base], columns=columns, dtype=object)), dtype=np.float64)
    widths = [1] * len(columns) if isinstance(encoder, OrdinalEncoder) else list(encoder._n_features_outs)
    if sum(widths) != out.shape[1]:
        return None
    blocks, start = [], 0
    for col, cats, width in zip(columns, encoder.categories_, widths, strict=True):
        probe = [str(c) for c in cats] + [UNSEEN]
        frame = pd.DataFrame([base] * len(probe), columns=columns, dtype=object)
        frame[col] = probe
        try:
            enc = np.asarray(encoder.transform(frame), dtype=np.float64)[:, start:start + width]
        except ValueError:  # an encoder that refuses unknown categories: the fast path would too
            return None
        table = {p: enc[i].copy() for i, p in enumerate(probe[:-1])}
        blocks.append(_Block("lookup", (col,), width, table=table, unknown=enc[-1].copy()))
        start += width
    return blocks


def _hgb_codes(est, blocks: list[_Block]) -> tuple[list[_Block], np.ndarray | None] | None:
    """Gradient boosting re-encodes its categorical inputs with an OrdinalEncoder of its own and puts them first:
    fold that into the lookup tables (our code -> its code) and a column order."""
    pre = getattr(est, "_preprocessor", None)
    if pre is None:
        return blocks, None
    is_cat = np.asarray(est.is_categorical_, dtype=bool)
    cat, num = np.flatnonzero(is_cat), np.flatnonzero(~is_cat)
    if pre.output_indices_["encoder"] != slice(0, len(cat)):
        return None
    cats = pre.named_transformers_["encoder"].categories_

    def recode(v: np.ndarray, k: int) -> np.ndarray:
        if np.isnan(v[0]):
            return np.array([np.nan])
        hit = np.flatnonzero(cats[k] == v[0])
        return np.array([float(hit[0]) if len(hit) else np.nan])  # unknown -> NaN, as its encoder does

    out, offset = [], 0
    for b in blocks:
        span = is_cat[offset:offset + b.width]
        if span.any():
            if b.kind != "lookup" or b.width != 1:
                return None
            k = int(np.flatnonzero(cat == offset)[0])
            b = _Block("lookup", b.columns, 1, table={key: recode(v, k) for key, v in b.table.items()},
                       unknown=recode(b.unknown, k))
        out.append(b)
        offset += b.width
    order = np.concatenate([cat, num])
    return out, (None if np.array_equal(order, np.arange(len(order))) else order)


def _estimator(est) -> tuple[Callable, Callable | None, str] | None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if isinstance(est, (HistGradientBoostingRegressor, HistGradientBoostingClassifier)):
        known, f_idx = est._bin_mapper.make_known_categories_bitsets()
        predictors, baseline = est._predictors, est._baseline_prediction

        def raw(X: np.ndarray) -> np.ndarray:
            out = np.zeros((X.shape[0], est.n_trees_per_iteration_), dtype=baseline.dtype, order="F")
            out += baseline
            for trees in predictors:
                for k, tree in enumerate(trees):
                    out[:, k] += tree.predict(X, known_cat_bitsets=known, f_idx_map=f_idx, n_threads=1)
            return out

        if isinstance(est, HistGradientBoostingRegressor):
            return (lambda X: est._loss.link.inverse(raw(X).ravel())), None, "regression"
        return None, (lambda X: est._loss.predict_proba(raw(X))), "classification"
    if isinstance(est, Ridge):
        coef, icpt = np.asarray(est.coef_, dtype=np.float64), est.intercept_

        def linear(X: np.ndarray) -> np.ndarray:
            if np.isnan(X).any():  # as sklearn's input check: a missing value the pipeline does not impute
                raise ValueError("Input X contains NaN.")
            return X @ coef.T + icpt

        return linear, None, "regression"
    if isinstance(est, LogisticRegression):
        return None, est.predict_proba, "classification"
    return None


def compile_rows(model) -> RowPath | None:
    """The fast row path of a fitted pipeline, or None when its structure is not one this module knows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) != 3:
        return None
    (_, feats), (_, prep), (_, est) = model.steps
    if not isinstance(feats, FeatureFrame) or not isinstance(prep, ColumnTransformer):
        return None
    numeric = set(feats.numeric)
    blocks: list[_Block] = []
    for name, transformer, columns in prep.transformers_:
        if name == "remainder":
            if transformer != "drop" and len(columns):
                return None
            continue
        columns = list(columns)
        if not columns:
            continue
        if set(columns) <= numeric:
            block = _numeric_block(columns, transformer)
            if block is None:
                return None
            blocks.append(block)
        elif not set(columns) & numeric:
            got = _lookup_blocks(columns, transformer)
            if got is None:
                return None
            blocks.extend(got)
        else:
            return None
    from ml.models import WithRareClasses

    wrapped = est if isinstance(est, WithRareClasses) else None
    est = wrapped.estimator_ if wrapped else est
    fitted = _estimator(est) if est is not None else None
    if fitted is None:
        return None
    if wrapped:  # the classes too rare to learn keep their share of the window
        inner = fitted[1]
        fitted = (None, lambda X: wrapped.spread(inner(X)), "classification")
    order = None
    if hasattr(est, "_bin_mapper"):  # gradient boosting
        coded = _hgb_codes(est, blocks)
        if coded is None:
            return None
        blocks, order = coded
    predict, proba, kind = fitted
    return RowPath(blocks, sum(b.width for b in blocks), predict, proba, kind, order,
                   (tuple(feats.numeric), tuple(feats.categorical)))


def agreement(model, path: RowPath, frame: pd.DataFrame) -> float:
    """Largest absolute difference between the pipeline and the fast path on the rows of `frame`."""
    cols = [*path.numeric, *path.categorical]
    rows = frame[cols].astype(object).where(frame[cols].notna(), None).to_dict("records")
    if path.kind == "regression":
        want, got = model.predict(frame), path.predict(rows)
    else:
        want, got = model.predict_proba(frame), path.predict_proba(rows)
    return float(np.max(np.abs(np.asarray(want, dtype=np.float64) - got))) if len(rows) else 0.0
