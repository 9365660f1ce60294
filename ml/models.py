"""Model families behind one sklearn interface: each is a Pipeline that takes a raw batch frame."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from ml.config import SourceConfig, TrainConfig
from ml.features import FeatureFrame


def build_model(cfg: SourceConfig, train: TrainConfig) -> Pipeline:
    """An unfitted pipeline of the configured family for the configured task."""
    num, cat = cfg.numeric_features, cfg.categorical_features
    head = ("features", FeatureFrame(num, cat))
    builder = {"hgb": _hgb, "linear": _linear, "mlp": _mlp}[train.family]
    return Pipeline([head, *builder(cfg, train)])


def build_baseline(cfg: SourceConfig) -> Pipeline:
    """The naive model every candidate must beat: training median (regression) or class prior."""
    est = DummyRegressor(strategy="median") if cfg.task == "regression" else DummyClassifier(strategy="prior")
    return Pipeline([("features", FeatureFrame(cfg.numeric_features, cfg.categorical_features)), ("model", est)])


def _hgb(cfg: SourceConfig, train: TrainConfig):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    n_cat = len(cfg.categorical_features)
    # Unknown and rare categories map to NaN / one shared code, so HGB's 255-bin limit always holds.
    enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                         encoded_missing_value=np.nan, max_categories=250, dtype=np.float64)
    prep = ColumnTransformer([("cat", enc, list(cfg.categorical_features)),
                              ("num", "passthrough", list(cfg.numeric_features))],
                             verbose_feature_names_out=False)
    cls = HistGradientBoostingRegressor if cfg.task == "regression" else HistGradientBoostingClassifier
    p = train.hgb
    loss = {"loss": p.loss} if cfg.task == "regression" else {}
    est = cls(**loss, max_iter=p.max_iter, learning_rate=p.learning_rate, max_leaf_nodes=p.max_leaf_nodes,
              min_samples_leaf=p.min_samples_leaf, l2_regularization=p.l2_regularization,
              categorical_features=list(range(n_cat)) or None, early_stopping=False,
              random_state=train.seed)
    return [("prep", prep), ("model", est)]


def _linear(cfg: SourceConfig, train: TrainConfig):
    from sklearn.linear_model import LogisticRegression, Ridge

    num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    cat = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, sparse_output=False)
    prep = ColumnTransformer([("num", num, list(cfg.numeric_features)), ("cat", cat, list(cfg.categorical_features))],
                             verbose_feature_names_out=False)
    if cfg.task == "regression":
        est = Ridge(alpha=train.linear.alpha)
    else:
        est = LogisticRegression(C=1.0 / train.linear.alpha, max_iter=1000)
    return [("prep", prep), ("model", est)]


def _mlp(cfg: SourceConfig, train: TrainConfig):
    from ml.torch_mlp import TorchMLPClassifier, TorchMLPRegressor

    p = train.mlp
    cls = TorchMLPRegressor if cfg.task == "regression" else TorchMLPClassifier
    est = cls(numeric=cfg.numeric_features, categorical=cfg.categorical_features, hidden=p.hidden,
              embedding_dim=p.embedding_dim, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
              weight_decay=p.weight_decay, seed=train.seed)
    return [("model", est)]


def model_family(model: Pipeline) -> str:
    """Short name of a fitted pipeline's final estimator, for logs and tags."""
    est = model.steps[-1][1]
    return type(est.estimator if isinstance(est, WithRareClasses) else est).__name__


class WithRareClasses(ClassifierMixin, BaseEstimator):
    """A classifier fitted without the classes too rare in its training rows to learn (fewer than `min_rows`
    rows, `ml.search.rare_classes`: gradient boosting's updates for them diverge), which it predicts at their
    share of the training rows; the learned classes share the rest. With fewer than two classes left to learn
    it predicts every class at its share: the class prior. Without it a week with one row of such a
    class scored that row at probability 0 (a log loss of 34.5 on the row, which alone put a candidate behind
    the class prior)."""

    def __init__(self, estimator, min_rows: int = 2):
        self.estimator = estimator
        self.min_rows = min_rows

    def fit(self, X, y):
        from sklearn.base import clone
        from sklearn.utils import _safe_indexing

        y = np.asarray(y)
        self.classes_, counts = np.unique(y, return_counts=True)
        rare = counts < self.min_rows
        if (~rare).sum() < 2:  # one class or none left to tell apart: every class at its share (the prior)
            rare[:] = True
            self.estimator_ = None
        else:
            keep = np.flatnonzero(~np.isin(y, self.classes_[rare]))
            self.estimator_ = clone(self.estimator).fit(_safe_indexing(X, keep), y[keep])
        self.shares_ = counts[rare] / len(y)
        self._rare = np.flatnonzero(rare)
        self._learned = (np.searchsorted(self.classes_, self.estimator_.classes_) if self.estimator_ is not None
                         else np.array([], dtype=int))
        return self

    def predict_proba(self, X) -> np.ndarray:
        if self.estimator_ is None:
            from sklearn.utils.validation import _num_samples

            return np.tile(self.shares_, (_num_samples(X), 1))
        return self.spread(self.estimator_.predict_proba(X))

    def spread(self, p: np.ndarray) -> np.ndarray:
        """The learned classes' probabilities `p` (the inner model's) as probabilities of every class."""
        p = np.asarray(p, dtype=np.float64)
        out = np.zeros((p.shape[0], len(self.classes_)))
        out[:, self._learned] = p * (1.0 - self.shares_.sum())
        out[:, self._rare] = self.shares_
        return out

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
