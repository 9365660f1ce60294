"""The weekly candidate search: the declared candidates (params `search.candidates`, each the `train` section with
its overrides) are fitted on the training window less its newest `search.validation_weeks` weeks and scored on
those weeks; the best is the recipe `train` then fits on the whole window.

The holdout week, on which the chosen candidate meets the champion, plays no part in the choice, so that
comparison carries no selection bias. Each candidate is independent of the others (one fit, one score): the
weekly flow runs them as parallel tasks on a Dask cluster, the DVC stage `search` one after another; both call
`score_candidate` and `choose`, so they reach the same choice. Pure: no Prefect, MLflow or DVC here.
"""
from __future__ import annotations

import dataclasses
import math
import time
from datetime import timedelta

import pandas as pd

from ml.config import Params, SourceConfig, TrainConfig, parse_section, search_candidates
from ml.metrics import PRIMARY, predict, summarize
from ml.split import week_bounds

# The six candidates the benchmarks measure (benchmarks/bench_search.py, bench_scale.py) and params.yaml shows:
# three boosted-tree settings, two ridge penalties, the PyTorch MLP; the first is the `train` section as it is.
EXAMPLE = {"hgb": {}, "hgb-small": {"hgb": {"max_leaf_nodes": 15, "min_samples_leaf": 50}},
           "hgb-slow": {"hgb": {"learning_rate": 0.05, "max_iter": 400}}, "linear": {"family": "linear"},
           "linear-strong": {"family": "linear", "linear": {"alpha": 30.0}}, "mlp": {"family": "mlp"}}


class SearchError(ValueError):
    """The search cannot choose: too few rows to fit or to score on, or every candidate failed to score."""


def candidates(params: Params) -> dict[str, TrainConfig]:
    """Name -> the effective training recipe of each declared candidate, in the declared order."""
    return search_candidates(params)


def validation_split(train: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, validation): the training window's rows before / in its newest `search.validation_weeks` weeks."""
    t = params.source.time_column
    cut = week_bounds(params.window.as_of)[0] - pd.Timedelta(days=7 * params.search.validation_weeks)
    late = (train[t] >= cut).to_numpy()
    fit, val = train[~late].reset_index(drop=True), train[late].reset_index(drop=True)
    target = params.source.target
    fit, val = fit[fit[target].notna()], val[val[target].notna()]
    if len(fit) == 0 or len(val) == 0:
        span = f"{(params.window.as_of - timedelta(days=7 * (params.search.validation_weeks + 1)))}.."
        raise SearchError(f"search: the training window has {len(fit)} rows to fit and {len(val)} to validate on "
                          f"(validation = the {params.search.validation_weeks} week(s) from {span}); "
                          "lower 'search.validation_weeks' or widen 'window.train_weeks'")
    return fit.reset_index(drop=True), val.reset_index(drop=True)


def rare_classes(source: SourceConfig, train_cfg: TrainConfig, frame: pd.DataFrame) -> dict:
    """Classes with fewer rows in `frame` than a leaf of the model may hold ({class: rows}): too few to learn, and
    gradient boosting's updates for them diverge (probabilities of 0 and 1 for every row), so they are left out
    of the fit and predicted at their share of the window (`ml.models.WithRareClasses`)."""
    if source.task != "classification":
        return {}
    counts = frame[source.target].value_counts()
    return {k: int(n) for k, n in counts[counts < max(2, train_cfg.hgb.min_samples_leaf)].items()}


def fit_model(source: SourceConfig, train_cfg: TrainConfig, frame: pd.DataFrame):
    """(fitted pipeline, seconds): one fit, with the thread pools held to `train.threads`; rows of classes too
    rare to learn (`rare_classes`) are left out of it."""
    from threadpoolctl import threadpool_limits

    from ml.models import WithRareClasses, build_model

    model = build_model(source, train_cfg)
    if rare_classes(source, train_cfg, frame):  # fitted without them, predicted at their share of the window
        name, est = model.steps[-1]
        model.steps[-1] = (name, WithRareClasses(est, max(2, train_cfg.hgb.min_samples_leaf)))
    y = frame[source.target].to_numpy()
    t0 = time.perf_counter()
    with threadpool_limits(train_cfg.threads or None):  # the OpenMP/BLAS pools sklearn loaded
        if train_cfg.threads and train_cfg.family == "mlp":
            import torch

            torch.set_num_threads(train_cfg.threads)  # torch keeps a pool of its own
        model.fit(frame, y)
    return model, time.perf_counter() - t0


def score_candidate(source: SourceConfig, name: str, train_cfg: TrainConfig, fit: pd.DataFrame,
                    validation: pd.DataFrame) -> dict:
    """Fit one candidate on `fit`, score it on `validation`: {name, family, metric, value, ...} (JSON-ready)."""
    model, seconds = fit_model(source, train_cfg, fit)
    y = validation[source.target].to_numpy()
    classes = getattr(model, "classes_", None)
    scores = summarize(source.task, y, predict(model, validation, source.task), classes)
    metric = PRIMARY[source.task]
    return {"name": name, "family": train_cfg.family, "metric": metric, "value": float(scores[metric]),
            "scores": scores, "fit_rows": int(len(fit)), "validation_rows": int(len(validation)),
            "fit_seconds": round(seconds, 3), "train": dataclasses.asdict(train_cfg)}


def longest_first(declared: dict[str, TrainConfig]) -> list[str]:
    """Candidate names, the slowest fits first (a rough cost: networks by epochs, boosting by trees, linear models
    cheapest), so that workers that finish early pick up the short ones and no long fit starts last."""
    def cost(c: TrainConfig) -> float:
        return {"mlp": 0.4 * c.mlp.epochs, "hgb": c.hgb.max_iter / 100, "linear": 0.1}[c.family]

    return sorted(declared, key=lambda n: -cost(declared[n]))  # stable: declared order among equals


def choose(results: list[dict], min_gain: float = 0.0) -> dict:
    """The candidate with the lowest validation loss (ties: the first declared), except that the first declared
    candidate (the incumbent recipe) stays unless another beats it by more than `min_gain` (relative): one week of
    validation is noisy, and chasing a hair's difference picks a worse model about as often as a better one.
    Raises when none scored."""
    ok = [r for r in results if math.isfinite(r.get("value", math.nan))]
    if not ok:
        raise SearchError(f"search: none of the {len(results)} candidates could be scored on the validation weeks")
    best = min(ok, key=lambda r: r["value"])
    first = results[0]
    if first in ok and best is not first and best["value"] > first["value"] * (1 - min_gain):
        return first
    return best


def summary(params: Params, results: list[dict]) -> dict:
    """What the `search` stage writes (data/search/results.json) and `train` reads: every candidate's score, best
    first, and the chosen recipe. Without declared candidates the recipe is the `train` section as it is."""
    base = {"as_of": params.window.as_of.isoformat(), "validation_weeks": params.search.validation_weeks,
            "min_gain": params.search.min_gain, "metric": PRIMARY[params.source.task]}
    if not results:
        return {**base, "chosen": None, "candidates": [], "train": dataclasses.asdict(params.train)}
    best = choose(results, params.search.min_gain)
    # what is deterministic only (no timings): the same data and params write the same file, so a `dvc repro -f`
    # of the search leaves train up to date
    kept = [{k: v for k, v in r.items() if k not in ("fit_seconds", "worker_pid")} for r in results]
    ranked = sorted(kept, key=lambda r: (not math.isfinite(r["value"]), r["value"]))
    return {**base, "chosen": best["name"], "candidates": ranked, "train": best["train"],
            "fit_rows": best["fit_rows"], "validation_rows": best["validation_rows"]}


def chosen_train(params: Params, doc: dict | None) -> TrainConfig:
    """The recipe `train` fits: the search's choice (results.json) or, with none, the `train` section."""
    if not doc or doc.get("train") is None:
        return params.train
    return parse_section(TrainConfig, doc["train"], "data/search/results.json: train")


def gap(results: list[dict]) -> float:
    """Relative gap between the best and the runner-up (0 with fewer than two scored): how clear the choice was."""
    v = sorted(r["value"] for r in results if math.isfinite(r["value"]))
    return float((v[1] - v[0]) / v[0]) if len(v) > 1 and v[0] > 0 else 0.0

