"""Drift of the newest week against the training window: Evidently's HTML for people, a summary for the decision."""
from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ml.metrics import predict
from stages.common import write_json
from tasks import lineage
from tasks.context import WeekRun


@task(name="drift report (Evidently)", cache_policy=NO_CACHE)
def drift_report(ctx: WeekRun) -> dict:
    """Training window vs new batch: features, target and predictions; HTML for people, summary for the decision."""
    from ml.drift import drift_summary, write_drift_report

    log = get_run_logger()
    p, s = ctx.params, ctx.params.source
    reference = pd.read_parquet(ctx.path("data", "prepared", "train.parquet"))
    current = pd.read_parquet(ctx.path("data", "prepared", "holdout.parquet"))
    model = joblib.load(ctx.path("data", "model", "model.pkl"))
    pred_col = "prediction"
    reference[pred_col] = _point(model, reference, s.task)
    current[pred_col] = _point(model, current, s.task)
    with lineage.step_run(ctx, "drift"):
        import mlflow

        features = drift_summary(reference, current, list(s.numeric_features), list(s.categorical_features),
                                 drift_share=p.drift.drift_share)
        target_kind = ([s.target], []) if s.task == "regression" else ([], [s.target])
        outputs = drift_summary(reference, current, [*target_kind[0], pred_col], target_kind[1],
                                drift_share=p.drift.drift_share)
        summary = {**features, "target": outputs["columns"][s.target], "prediction": outputs["columns"][pred_col]}
        html = ctx.run_dir / "drift_report.html"
        report = write_drift_report(reference, current, list(s.numeric_features), list(s.categorical_features),
                                    html, target=s.target if s.task == "regression" else None,
                                    prediction=pred_col if s.task == "regression" else None,
                                    sample_rows=p.drift.report_rows, seed=p.drift.seed)
        summary["report"] = report
        write_json(ctx.run_dir / "drift_summary.json", summary)
        mlflow.log_artifact(str(html), "drift")
        lineage.log_json(summary, "drift/drift_summary.json")
        mlflow.log_metrics({"share_drifted": summary["share_drifted"], "n_drifted": summary["n_drifted"],
                            "target_drifted": float(summary["target"]["drifted"]),
                            "prediction_drifted": float(summary["prediction"]["drifted"])})
        drifted = [c for c, v in summary["columns"].items() if v["drifted"]]
        log.info(f"drift: {summary['n_drifted']} of {summary['n_columns']} feature columns drifted "
                 f"({summary['share_drifted']:.0%}{': ' + ', '.join(drifted) if drifted else ''}); target "
                 f"{'drifted' if summary['target']['drifted'] else 'stable'}, predictions "
                 f"{'drifted' if summary['prediction']['drifted'] else 'stable'}")
    return summary


def _point(model, frame: pd.DataFrame, task: str) -> np.ndarray:
    pred = predict(model, frame, task)
    return pred if task == "regression" else pred.max(axis=1)
