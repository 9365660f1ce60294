"""The candidate search on real weeks: what chooses (the newest training week, never the holdout), what is chosen
(the lowest validation loss), and params errors that name the candidate and the key."""
from __future__ import annotations

import dataclasses
from datetime import date

import pandas as pd
import pytest
import yaml

from ml.config import ConfigError, TrainConfig, parse_params
from ml.search import SearchError, candidates, choose, chosen_train, score_candidate, summary, validation_split
from ml.split import week_bounds
from tests.conftest import ROOT


def params_with(**sections):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_params(raw)


def window(flights, p):
    """The training window of params `p`: the train_weeks weeks before the holdout week."""
    t, start = p.source.time_column, week_bounds(p.window.as_of)[0]
    lo = start - pd.Timedelta(days=7 * p.window.train_weeks)
    return flights[(flights[t] >= lo) & (flights[t] < start)].reset_index(drop=True)


def test_each_candidate_is_the_train_section_with_its_overrides():
    p = params_with(search={"candidates": {"a": {}, "b": {"hgb": {"max_leaf_nodes": 7}},
                                           "c": {"family": "linear", "linear": {"alpha": 3}}}})
    c = candidates(p)
    assert list(c) == ["a", "b", "c"]
    assert c["a"] == p.train
    assert c["b"].hgb.max_leaf_nodes == 7 and c["b"].hgb.max_iter == p.train.hgb.max_iter  # merged key by key
    assert c["c"].family == "linear" and c["c"].linear.alpha == 3.0 and c["c"].seed == p.train.seed


@pytest.mark.parametrize(("search", "named"), [
    ({"candidates": {"a": {"hgb": {"max_leaves": 7}}}}, "search.candidates.a.hgb.max_leaves"),
    ({"candidates": {"a": {"family": "xgboost"}}}, "search.candidates.a.family"),
    ({"candidates": {"a": {"linear": {"alpha": "strong"}}}}, "search.candidates.a.linear.alpha"),
    ({"candidates": {"a": [1, 2]}}, "search.candidates.a"),
    ({"candidates": {"a b": {}}}, "search.candidates.a b"),
    ({"candidates": {"a": {}}, "validation_weeks": 8}, "search.validation_weeks"),
    ({"workers": 0}, "search.workers"),
])
def test_bad_search_params_name_the_key(search, named):
    with pytest.raises(ConfigError) as e:
        params_with(search=search)
    assert named in str(e.value)


def test_the_newest_training_week_chooses_and_the_holdout_week_never_does(flights):
    p = params_with(window={"as_of": "2013-06-02", "train_weeks": 4}, search={"validation_weeks": 1})
    train = window(flights, p)
    fit, val = validation_split(train, p)
    t = p.source.time_column
    holdout_start = week_bounds(date(2013, 6, 2))[0]
    assert val[t].min() >= holdout_start - pd.Timedelta(days=7)
    assert val[t].max() < holdout_start  # not one row of the holdout week
    assert fit[t].max() < val[t].min()  # fitted strictly before what scores it
    assert len(fit) + len(val) == train[p.source.target].notna().sum()


def test_too_short_a_window_to_validate_is_a_clear_error(flights):
    p = params_with(window={"as_of": "2013-06-02", "train_weeks": 4})
    train = window(flights, p)
    late = train[train[p.source.time_column] >= week_bounds(date(2013, 6, 2))[0]
                 - pd.Timedelta(days=7)]
    with pytest.raises(SearchError, match="validation_weeks"):
        validation_split(late, p)


def test_the_lowest_validation_loss_is_chosen_and_the_summary_is_deterministic(flights):
    p = params_with(window={"as_of": "2013-06-02", "train_weeks": 3},
                    search={"candidates": {"stumps": {"hgb": {"max_iter": 10, "max_leaf_nodes": 2}},
                                           "trees": {"hgb": {"max_iter": 60}}, "linear": {"family": "linear"}}})
    fit, val = validation_split(window(flights, p), p)
    results = [score_candidate(p.source, n, c, fit, val) for n, c in candidates(p).items()]
    by = {r["name"]: r["value"] for r in results}
    assert by["trees"] < by["stumps"]  # 60 trees of 31 leaves beat 10 stumps on a real week
    doc = summary(p, results)
    assert doc["chosen"] == min(by, key=by.get) and doc["candidates"][0]["name"] == doc["chosen"]
    assert [c["value"] for c in doc["candidates"]] == sorted(by.values())
    again = [score_candidate(p.source, n, c, fit, val) for n, c in candidates(p).items()]
    assert summary(p, again) == doc  # no timings in the file: the same data and params write the same bytes
    assert chosen_train(p, doc) == candidates(p)[doc["chosen"]]


def test_ties_go_to_the_first_declared_and_a_failed_score_is_never_chosen():
    r = [{"name": "a", "value": 2.0}, {"name": "b", "value": 1.0}, {"name": "c", "value": 1.0},
         {"name": "d", "value": float("nan")}]
    assert choose(r)["name"] == "b"
    with pytest.raises(SearchError, match="none of the 1"):
        choose([{"name": "d", "value": float("nan")}])


def test_without_candidates_train_fits_the_train_section():
    p = params_with(search={"candidates": {}})
    doc = summary(p, [])
    assert doc["chosen"] is None and chosen_train(p, doc) == p.train
    assert chosen_train(p, None) == p.train
    assert isinstance(chosen_train(p, {"train": dataclasses.asdict(TrainConfig(family="linear"))}), TrainConfig)


def test_the_first_declared_stays_unless_another_beats_it_by_more_than_min_gain():
    r = [{"name": "incumbent", "value": 10.0}, {"name": "close", "value": 9.95}, {"name": "far", "value": 9.0}]
    assert choose(r[:2], min_gain=0.01)["name"] == "incumbent"  # 0.5 % better: within the validation's noise
    assert choose(r[:2], min_gain=0.0)["name"] == "close"
    assert choose(r, min_gain=0.05)["name"] == "far"  # 10 % better
    assert choose([{"name": "broken", "value": float("nan")}, *r[1:]], min_gain=0.5)["name"] == "far"
