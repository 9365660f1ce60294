import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest

from ml.config import MLPParams, SourceConfig, TrainConfig
from ml.metrics import PRIMARY, predict, row_loss, summarize
from ml.models import build_baseline, build_model

FAMILIES = ["hgb", "linear", "mlp"]
TASKS = ["regression", "classification"]


def tiny(task: str, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A learnable frame: the target depends on a numeric and a categorical feature; some NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    c = rng.choice(["a", "b", "c"], size=n)
    x_nan = np.where(rng.random(n) < 0.05, np.nan, x)
    signal = 3 * x + np.select([c == "a", c == "b"], [2.0, -2.0], 0.0)
    y = signal + rng.normal(scale=0.3, size=n) if task == "regression" else np.where(signal > 0, "late", "ok")
    return pd.DataFrame({"x": x_nan, "noise": rng.normal(size=n), "c": c, "y": y})


def cfg(task: str) -> SourceConfig:
    return SourceConfig(kind="files", path="x", time_column="t", target="y", task=task,
                        numeric_features=("x", "noise"), categorical_features=("c",))


def train_cfg(family: str) -> TrainConfig:
    return TrainConfig(family=family, seed=7, mlp=MLPParams(epochs=15, hidden=(16,), batch_size=64, lr=0.01))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_learns_and_beats_the_baseline(family, task):
    train, test = tiny(task, seed=1), tiny(task, n=300, seed=2)
    model = build_model(cfg(task), train_cfg(family)).fit(train, train["y"].to_numpy())
    base = build_baseline(cfg(task)).fit(train, train["y"].to_numpy())
    classes = getattr(model, "classes_", None)
    m = summarize(task, test["y"].to_numpy(), predict(model, test, task), classes)
    b = summarize(task, test["y"].to_numpy(), predict(base, test, task), getattr(base, "classes_", None))
    key = PRIMARY[task]
    assert m[key] < 0.6 * b[key], (m, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_category_and_missing_values_at_predict_time(family):
    train = tiny("regression")
    model = build_model(cfg("regression"), train_cfg(family)).fit(train, train["y"].to_numpy())
    odd = pd.DataFrame({"x": [np.nan, 0.5], "noise": [0.0, np.nan], "c": ["never-seen", None]})
    pred = model.predict(odd)
    assert pred.shape == (2,) and np.isfinite(pred).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_training_is_deterministic_and_pickles(family):
    train, test = tiny("regression"), tiny("regression", n=50, seed=3)
    a = build_model(cfg("regression"), train_cfg(family)).fit(train, train["y"].to_numpy())
    b = build_model(cfg("regression"), train_cfg(family)).fit(train, train["y"].to_numpy())
    np.testing.assert_array_equal(a.predict(test), b.predict(test))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.predict(test), c.predict(test))


def test_mlp_seed_changes_the_model():
    train, test = tiny("regression"), tiny("regression", n=50, seed=3)
    a = build_model(cfg("regression"), train_cfg("mlp")).fit(train, train["y"].to_numpy())
    other = dataclasses.replace(train_cfg("mlp"), seed=8)
    b = build_model(cfg("regression"), other).fit(train, train["y"].to_numpy())
    assert not np.array_equal(a.predict(test), b.predict(test))


def test_model_ignores_extra_columns_and_column_order():
    train = tiny("regression")
    model = build_model(cfg("regression"), train_cfg("hgb")).fit(train, train["y"].to_numpy())
    shuffled = train[["c", "y", "noise", "x"]].assign(extra=1)
    np.testing.assert_array_equal(model.predict(train), model.predict(shuffled))


@pytest.mark.parametrize("y,pred,expected", [
    ([1.0, 2.0], [1.5, 0.0], [0.5, 2.0]),
    ([0.0], [0.0], [0.0]),
])
def test_regression_row_loss_is_absolute_error(y, pred, expected):
    np.testing.assert_allclose(row_loss("regression", np.array(y), np.array(pred)), expected)


def test_classification_row_loss_is_log_loss_of_true_class():
    classes = np.array(["late", "ok"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    loss = row_loss("classification", np.array(["late", "late", "unseen"]), proba, classes)
    np.testing.assert_allclose(loss[:2], [-np.log(0.9), -np.log(0.2)])
    assert loss[2] > 30  # a class the model never saw gets the clipped maximum loss
    s = summarize("classification", np.array(["late", "ok"]), proba[:2], classes)
    assert s["accuracy"] == 1.0 and s["roc_auc"] == 1.0
