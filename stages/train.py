"""DVC stages `train` and `refit`: fit the configured model family and the naive baseline on the training window
(`train`), or on the window moved one week on, so that it ends with the holdout week (`refit`: the model that is
served once the candidate is chosen; the candidate itself is what was judged on the holdout)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from ml.config import Params
from ml.models import build_baseline, build_model, model_family
from ml.split import week_bounds
from stages.common import cli, fmt_int, load_params, write_json, write_pickle


def fit_candidate(params: Params, train: pd.DataFrame):
    """(model, baseline, info) fitted on the training frame."""
    s = params.source
    from threadpoolctl import threadpool_limits

    y = train[s.target].to_numpy()
    model = build_model(s, params.train)
    t0 = time.perf_counter()
    with threadpool_limits(params.train.threads or None):  # the OpenMP/BLAS pools sklearn loaded
        if params.train.threads and params.train.family == "mlp":
            import torch

            torch.set_num_threads(params.train.threads)  # torch keeps a pool of its own
        model.fit(train, y)
    fit_s = time.perf_counter() - t0
    baseline = build_baseline(s).fit(train, y)
    info = {"family": params.train.family, "estimator": model_family(model), "seed": params.train.seed,
            "task": s.task, "target": s.target, "numeric_features": list(s.numeric_features),
            "categorical_features": list(s.categorical_features), "train_rows": len(train),
            "fit_seconds": round(fit_s, 3)}
    return model, baseline, info


def refit_window(params: Params, train: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """The training window moved on by one week: its oldest week out, the holdout week in."""
    w, t = params.window, params.source.time_column
    cut = week_bounds(w.as_of)[1] - pd.Timedelta(days=7 * w.train_weeks)  # the first day of the 2nd-oldest week
    return pd.concat([train[train[t] >= cut], holdout], ignore_index=True)


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/prepared/train.parquet")
    ap.add_argument("--out", default="data/model")
    ap.add_argument("--refit-with", metavar="HOLDOUT", help="refit: add this holdout week and drop the oldest "
                    "training week (the window of the same length that ends with the holdout)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    train = pd.read_parquet(args.train)
    if args.refit_with:
        train = refit_window(params, train, pd.read_parquet(args.refit_with))
    model, baseline, info = fit_candidate(params, train)
    out = Path(args.out)
    write_pickle(out / "model.pkl", model)
    write_pickle(out / "baseline.pkl", baseline)
    write_json(out / "info.json", info)
    what = "refit (window ending with the holdout week)" if args.refit_with else "train"
    print(f"{what}: {info['family']} ({info['estimator']}) on {fmt_int(info['train_rows'])} rows "
          f"in {info['fit_seconds']:.1f} s")


if __name__ == "__main__":
    main()
