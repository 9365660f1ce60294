"""Feature frames: the configured columns with stable dtypes, as every model family expects them."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

MISSING = "__missing__"


def feature_frame(df: pd.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...]) -> pd.DataFrame:
    """Numeric columns as float64 (NaN kept), categorical ones as plain strings with a missing token."""
    missing = [c for c in (*numeric, *categorical) if c not in df.columns]
    if missing:
        raise KeyError(f"input lacks feature column(s) {missing}")
    out = {}
    for c in numeric:
        out[c] = pd.to_numeric(df[c], errors="raise").astype("float64")
    for c in categorical:
        col = df[c]
        out[c] = col.astype(object).where(col.notna(), MISSING).astype(str).astype(object)
    return pd.DataFrame(out, index=df.index)


class FeatureFrame(TransformerMixin, BaseEstimator):
    """First step of every model pipeline: select and type the feature columns of a raw batch."""

    def __init__(self, numeric: tuple[str, ...] = (), categorical: tuple[str, ...] = ()):
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y=None):
        self.feature_names_in_ = np.array([*self.numeric, *self.categorical], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return feature_frame(X, tuple(self.numeric), tuple(self.categorical))

    def get_feature_names_out(self, input_features=None):
        return np.array([*self.numeric, *self.categorical], dtype=object)
