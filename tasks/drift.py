"""Drift of the newest week against the training window: Evidently's HTML for people, calibrated alarms for the
decision (each column's statistic against its own week-to-week variation over the landed history, and the
candidate's errors on the week against its errors on the landed weeks older than its training window)."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.config import Params
from ml.drift import PREDICTION, column_kinds, point_prediction, residuals
from stages.common import write_json
from tasks import lineage
from tasks.context import WeekRun


def landed_weeks(params: Params, raw_dir: Path, weeks: list[date]) -> pd.DataFrame | None:
    """The landed batches among `weeks` (absent or excluded weeks are skipped), or None if none is landed."""
    from stages.ingest import batch_path
    from stages.prepare import read_batches

    have = [w for w in weeks if batch_path(raw_dir, w).exists()]
    return read_batches(params, raw_dir, have) if have else None


def history_weeks(params: Params, as_of: date, gap: int = 0) -> list[date]:
    """The weeks the calibrated null of the week `as_of` can use: drift.history_weeks past weeks, each with its
    own window of train_weeks weeks ending `gap` weeks before it (oldest first)."""
    from ml.split import training_weeks

    return training_weeks(as_of, params.drift.history_weeks + gap + params.window.train_weeks)


def weekly_null(params: Params, history: pd.DataFrame, as_of: date, kinds: dict[str, str], gap: int = 0,
                residuals: np.ndarray | None = None):
    """The calibrated null for the week `as_of` from the landed `history` (rows of the weeks before it);
    `residuals` (one per history row): the model's errors, whose weeks before its window are out of sample."""
    from ml.calibration import learn_null, weeks_of
    from ml.split import week_bounds

    weeks = weeks_of(history[params.source.time_column], week_bounds(as_of)[0])
    return learn_null(history, weeks, kinds, window=params.window.train_weeks, gap=gap,
                      alpha=params.drift.alarm_rate, max_weeks=params.drift.history_weeks, residuals=residuals)


@task(name="drift report (Evidently + calibrated alarms)", cache_policy=NO_CACHE)
def drift_report(ctx: WeekRun) -> dict:
    """Training window vs new batch: features, target and predictions; HTML for people, calibrated summary for
    the decision (Evidently's own verdicts kept beside it)."""
    from ml.calibration import alarm_summary, describe_alarm
    from ml.drift import drift_summary, write_drift_report
    from stages.ingest import window

    log = get_run_logger()
    p, s = ctx.params, ctx.params.source
    reference = pd.read_parquet(ctx.path("data", "prepared", "train.parquet"))
    current = pd.read_parquet(ctx.path("data", "prepared", "holdout.parquet"))
    model = joblib.load(ctx.path("data", "model", "model.pkl"))
    reference[PREDICTION] = point_prediction(model, reference, s.task)
    current[PREDICTION] = point_prediction(model, current, s.task)
    kinds = column_kinds(p, prediction=True)
    window_weeks = window(ctx.path("data", "raw"), ctx.as_of, p.window.train_weeks)
    with lineage.step_run(ctx, "drift"):
        import mlflow

        # earlier landed weeks, labelled rows only as in the training window, with this model's predictions
        earlier = [w for w in history_weeks(p, ctx.as_of) if w < window_weeks[0]]
        older = landed_weeks(p, ctx.path("data", "raw"), earlier)
        if older is not None:
            older = older[older[s.target].notna()].reset_index(drop=True)
            older[PREDICTION] = point_prediction(model, older, s.task)
        history = reference if older is None else pd.concat([older, reference], ignore_index=True)
        # the model's errors: out of sample on the older weeks only (it was trained on the window)
        errors = np.concatenate([residuals(model, older, s.target, s.task) if older is not None else [],
                                 np.full(len(reference), np.nan)])
        null = weekly_null(p, history, ctx.as_of, kinds, residuals=errors)
        numeric = [c for c, k in kinds.items() if k == "numerical"]
        categorical = [c for c, k in kinds.items() if k == "categorical"]
        evidently = drift_summary(reference, current, numeric, categorical, drift_share=p.drift.drift_share)
        features = [*s.numeric_features, *s.categorical_features]
        # Evidently's dataset verdict is over the features only, as before
        n_ev = sum(evidently["columns"][c]["drifted"] for c in features)
        evidently["dataset_drift"] = bool(n_ev / len(features) >= p.drift.drift_share)
        summary = alarm_summary(null, current, features, target=s.target, prediction=PREDICTION, evidently=evidently,
                                residuals=residuals(model, current, s.target, s.task))
        html = ctx.run_dir / "drift_report.html"
        report = write_drift_report(reference, current, list(s.numeric_features), list(s.categorical_features),
                                    html, target=s.target if s.task == "regression" else None,
                                    prediction=PREDICTION if s.task == "regression" else None,
                                    sample_rows=p.drift.report_rows, seed=p.drift.seed)
        summary["report"] = report
        write_json(ctx.run_dir / "drift_summary.json", summary)
        mlflow.log_artifact(str(html), "drift")
        lineage.log_json(summary, "drift/drift_summary.json")
        mlflow.log_metrics({"share_drifted": summary["share_drifted"], "n_drifted": summary["n_drifted"],
                            "target_drifted": float(summary["target"]["drifted"]),
                            "prediction_drifted": float(summary["prediction"]["drifted"]),
                            "residual_drifted": float(summary["residual"]["drifted"]),
                            "drift_alarm": float(summary["alarm"]),
                            "evidently_n_drifted": summary["evidently"]["n_drifted"]})
        log.info(f"drift: {describe_alarm(summary)}; Evidently's default thresholds would flag "
                 f"{summary['evidently']['n_drifted']} of {summary['evidently']['n_columns']} features")
    return summary
