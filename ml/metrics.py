"""Metrics for regression and classification, plus the per-row loss that the comparison statistics use."""
from __future__ import annotations

import numpy as np
import pandas as pd

PRIMARY = {"regression": "mae", "classification": "log_loss"}
EPS = 1e-15


def predict(model, X: pd.DataFrame, task: str) -> np.ndarray:
    """Point predictions (regression) or class-probability matrix (classification)."""
    return model.predict(X) if task == "regression" else model.predict_proba(X)


def row_loss(task: str, y: np.ndarray, pred: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Loss of each row: absolute error, or log loss of the true class."""
    if task == "regression":
        return np.abs(np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64))
    idx = np.searchsorted(classes, y)
    known = (idx < len(classes)) & (classes[np.minimum(idx, len(classes) - 1)] == y)
    p = np.where(known, pred[np.arange(len(y)), np.minimum(idx, len(classes) - 1)], 0.0)
    return -np.log(np.clip(p, EPS, 1.0))


def summarize(task: str, y: np.ndarray, pred: np.ndarray, classes: np.ndarray | None = None) -> dict[str, float]:
    """Headline metrics of one model on one set of rows (plain floats, JSON-ready)."""
    y = np.asarray(y)
    out: dict[str, float] = {"rows": int(len(y))}
    if task == "regression":
        err = np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64)
        ss_tot = float(((y - y.mean()) ** 2).sum()) or 1.0
        out.update(mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err ** 2).mean())),
                   r2=float(1 - (err ** 2).sum() / ss_tot))
    else:
        out["log_loss"] = float(row_loss(task, y, pred, classes).mean())
        out["accuracy"] = float((classes[pred.argmax(axis=1)] == y).mean())
        if len(classes) == 2 and len(np.unique(y)) == 2:
            from sklearn.metrics import roc_auc_score

            out["roc_auc"] = float(roc_auc_score(y == classes[1], pred[:, 1]))
    return out


def loss_by_slice(frame: pd.DataFrame, loss: np.ndarray, column: str) -> pd.DataFrame:
    """Mean loss and row count per value of `column`, largest slices first."""
    g = pd.DataFrame({column: frame[column].astype(str).to_numpy(), "loss": loss}).groupby(column)["loss"]
    return (pd.DataFrame({"loss": g.mean(), "rows": g.size()}).reset_index()
            .sort_values("rows", ascending=False, kind="stable").reset_index(drop=True))
