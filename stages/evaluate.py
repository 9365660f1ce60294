"""DVC stage `evaluate`: the candidate and the naive baseline on the holdout week -> metrics and plots."""
from __future__ import annotations

import argparse
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from ml.config import ConfigError, Params
from ml.metrics import PRIMARY, loss_by_slice, predict, row_loss, summarize
from ml.wording import better_or_worse, metric_text
from stages.common import cli, load_stage_params, write_csv, write_json, write_parquet


def score(params: Params, model, holdout: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, dict]:
    """(predictions, per-row loss, summary metrics) of one model on the holdout."""
    s = params.source
    y = holdout[s.target].to_numpy()
    pred = predict(model, holdout, s.task)
    classes = getattr(model, "classes_", None)
    return pred, row_loss(s.task, y, pred, classes), summarize(s.task, y, pred, classes)


def point(pred: np.ndarray, task: str, classes) -> np.ndarray:
    return pred if task == "regression" else classes[pred.argmax(axis=1)]


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="data/model")
    ap.add_argument("--holdout", default="data/prepared/holdout.parquet")
    ap.add_argument("--out", default="data/eval")
    args = ap.parse_args(argv)
    params = load_stage_params(args.params)
    s, ev = params.source, params.evaluate
    model_dir, out = Path(args.model), Path(args.out)
    model, baseline = joblib.load(model_dir / "model.pkl"), joblib.load(model_dir / "baseline.pkl")
    holdout = pd.read_parquet(args.holdout)
    if ev.slice_column and ev.slice_column not in holdout.columns:
        raise ConfigError(f"params: 'evaluate.slice_column' is '{ev.slice_column}', which is not a column of "
                          f"{args.holdout}; use one of {', '.join(holdout.columns)}")
    pred, loss, m = score(params, model, holdout)
    _, base_loss, b = score(params, baseline, holdout)
    key = PRIMARY[s.task]
    metrics = {"as_of": params.window.as_of.isoformat(), "metric": key, "model": m, "baseline": b,
               "improvement_vs_baseline": 1 - m[key] / b[key] if b[key] else 0.0}
    classes = getattr(model, "classes_", None)
    rows = pd.DataFrame({"actual": holdout[s.target].to_numpy(), "predicted": point(pred, s.task, classes),
                         "loss": loss, "baseline_loss": base_loss})
    if s.unit_id:
        rows.insert(0, s.unit_id, holdout[s.unit_id].to_numpy())
    write_parquet(out / "predictions.parquet", rows)
    write_json(out / "metrics.json", metrics)
    sample = rows.sample(n=min(ev.plot_rows, len(rows)), random_state=0).sort_index()
    write_csv(out / "plots" / "predicted_vs_actual.csv", sample[["actual", "predicted"]])
    # written in every case (dvc.yaml declares it): without a slice column, the table has its header only
    by = (loss_by_slice(holdout, loss, ev.slice_column).rename(columns={"loss": key, ev.slice_column: "slice"})
          if ev.slice_column else pd.DataFrame({"slice": pd.Series(dtype=str), key: pd.Series(dtype=float),
                                                "rows": pd.Series(dtype=int)}))
    write_csv(out / "plots" / "error_by_slice.csv", by[["slice", key, "rows"]])
    print(f"evaluate: holdout {key} {metric_text(m[key], 3)} vs naive baseline {metric_text(b[key], 3)} "
          f"({better_or_worse(metrics['improvement_vs_baseline'])}) on {m['rows']:,} rows")


if __name__ == "__main__":
    main()
