"""DVC stage `train`: fit the chosen recipe (the `search` stage's choice, data/search/results.json, or the `train`
section when no candidates are declared) and the naive baseline on the training window (data/model: the candidate,
judged on the holdout week), and, given the holdout week, the same recipe again on the window moved one week on so
that it ends with the holdout week (data/refit: the model that is served once the candidate is chosen). Both fits run
in one process: the libraries are imported once."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

from ml.config import Params
from ml.models import build_baseline, model_family
from ml.search import chosen_train, fit_model, rare_classes
from ml.split import week_bounds
from stages.common import cli, fmt_int, load_stage_params, write_json, write_pickle


def fit_candidate(params: Params, train: pd.DataFrame, search: dict | None = None):
    """(model, baseline, info) fitted on the training frame, with the recipe the search chose."""
    s = params.source
    recipe = chosen_train(params, search)
    rare = rare_classes(s, recipe, train)
    if rare:
        prior = len(rare) >= train[s.target].nunique() - 1  # fewer than two classes left to learn
        print(f"train: class(es) {', '.join(f'{k!r} ({n} rows)' for k, n in rare.items())} too rare in the window "
              f"to learn (fewer than {max(2, recipe.hgb.min_samples_leaf)} rows): "
              + ("fewer than two classes are left to learn, so every class is predicted at its share of the window "
                 "(the class prior)" if prior else "left out of the fit, predicted at their share of the window"))
    model, fit_s = fit_model(s, recipe, train)
    baseline = build_baseline(s).fit(train, train[s.target].to_numpy())
    info = {"family": recipe.family, "estimator": model_family(model), "seed": recipe.seed,
            "candidate": (search or {}).get("chosen"), "train": dataclasses.asdict(recipe),
            "task": s.task, "target": s.target, "numeric_features": list(s.numeric_features),
            "categorical_features": list(s.categorical_features), "train_rows": len(train),
            "fit_seconds": round(fit_s, 3)}
    return model, baseline, info


def refit_window(params: Params, train: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """The training window moved on by one week: its oldest week out, the holdout week in."""
    w, t = params.window, params.source.time_column
    cut = week_bounds(w.as_of)[1] - pd.Timedelta(days=7 * w.train_weeks)  # the first day of the 2nd-oldest week
    return pd.concat([train[train[t] >= cut], holdout], ignore_index=True)


def fit_and_write(params: Params, train: pd.DataFrame, search: dict | None, out: Path, what: str) -> None:
    """Fit the candidate (and its baseline) on `train` and write model.pkl, baseline.pkl and info.json to `out`."""
    model, baseline, info = fit_candidate(params, train, search)
    write_pickle(out / "model.pkl", model)
    write_pickle(out / "baseline.pkl", baseline)
    write_json(out / "info.json", info)
    chosen = f"candidate {info['candidate']}: " if info["candidate"] else ""
    print(f"{what}: {chosen}{info['family']} ({info['estimator']}) on {fmt_int(info['train_rows'])} rows "
          f"in {info['fit_seconds']:.1f} s")


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/prepared/train.parquet")
    ap.add_argument("--out", default="data/model")
    ap.add_argument("--search", default="data/search/results.json", help="the search stage's choice")
    ap.add_argument("--holdout", metavar="PARQUET", help="also fit the served model: the same recipe on the window "
                    "of the same length that ends with this holdout week (its oldest training week dropped)")
    ap.add_argument("--refit-out", default="data/refit", help="where the served model goes (with --holdout)")
    args = ap.parse_args(argv)
    params = load_stage_params(args.params)
    train = pd.read_parquet(args.train)
    search = json.loads(Path(args.search).read_text()) if Path(args.search).exists() else None
    fit_and_write(params, train, search, Path(args.out), "train")
    if args.holdout:
        moved = refit_window(params, train, pd.read_parquet(args.holdout))
        fit_and_write(params, moved, search, Path(args.refit_out), "refit (window ending with the holdout week)")


if __name__ == "__main__":
    main()
