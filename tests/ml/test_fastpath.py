"""The serving fast path computes what the fitted pipeline computes, on real weeks (flights regression, Beijing
air classification) and on the rows that trip encoders: unseen categories, missing values, the missing token;
a structure it does not know gives None, and a missing number a pipeline does not impute still fails."""
from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pandas as pd
import pytest

from ml.fastpath import agreement, compile_rows
from ml.models import build_model
from ml.split import slice_week, training_weeks
from stages.common import load_params
from tests.conftest import ROOT
from tests.ml.test_models import AIR, air_weeks, cfg, default_train, tiny, train_cfg

PARAMS = load_params(ROOT / "params.yaml")


def flights_window(flights, as_of: date, weeks: int = 3) -> pd.DataFrame:
    return pd.concat([slice_week(flights, "time_hour", w) for w in training_weeks(as_of, weeks)], ignore_index=True)


def odd_rows(frame: pd.DataFrame, numeric, categorical) -> pd.DataFrame:
    """Real rows with every kind of awkward value a client sends."""
    odd = frame.head(40).copy()
    odd.loc[odd.index[:10], list(numeric)] = np.nan
    for i, c in enumerate(categorical):
        odd.loc[odd.index[10 + i], c] = "never-seen-category"
        odd.loc[odd.index[20 + i], c] = None
        odd.loc[odd.index[30 + i], c] = "__missing__"
    return odd


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hgb", "linear"])
def test_flights_regression_same_predictions_on_a_real_week(flights, family):
    s = PARAMS.source
    train = flights_window(flights, date(2013, 5, 26))
    hold = slice_week(flights, "time_hour", date(2013, 5, 26))
    model = build_model(s, dataclasses.replace(PARAMS.train, family=family)).fit(train, train[s.target])
    path = compile_rows(model)
    assert path is not None
    assert agreement(model, path, hold) <= 1e-9
    assert agreement(model, path, odd_rows(hold, s.numeric_features, s.categorical_features)) <= 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hgb", "linear"])
def test_air_quality_classification_same_probabilities(family):
    train, hold = air_weeks(date(2014, 1, 5), 3), air_weeks(date(2014, 1, 12), 1)
    model = build_model(AIR, dataclasses.replace(default_train(), family=family)).fit(train, train[AIR.target])
    path = compile_rows(model)
    assert path is not None and path.kind == "classification"
    assert agreement(model, path, hold) <= 1e-9
    assert agreement(model, path, odd_rows(hold, AIR.numeric_features, AIR.categorical_features)) <= 1e-9


def test_unknown_structures_keep_the_pipeline():
    train = tiny("regression")
    mlp = build_model(cfg("regression"), train_cfg("mlp")).fit(train, train["y"].to_numpy())
    assert compile_rows(mlp) is None
    from sklearn.ensemble import RandomForestRegressor

    hgb = build_model(cfg("regression"), train_cfg("hgb"))
    hgb.steps[-1] = ("model", RandomForestRegressor(n_estimators=5, random_state=0))
    assert compile_rows(hgb.fit(train, train["y"].to_numpy())) is None


def test_a_missing_number_the_pipeline_does_not_impute_fails_as_it_does():
    train = tiny("regression").dropna()
    model = build_model(cfg("regression"), train_cfg("linear")).fit(train, train["y"].to_numpy())
    num = model.named_steps["prep"].named_transformers_["num"]
    num.steps = [st for st in num.steps if st[0] != "simpleimputer"]
    path = compile_rows(model)
    assert path is not None
    with pytest.raises(ValueError, match="NaN"):
        model.predict(pd.DataFrame({"x": [np.nan], "noise": [0.0], "c": ["a"]}))
    with pytest.raises(ValueError, match="NaN"):
        path.predict([{"x": None, "noise": 0.0, "c": "a"}])
