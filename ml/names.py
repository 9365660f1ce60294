"""The names the project's parts meet on, defined once: registry aliases (the service's variants are the first
two), and the deployments flows start one another through (`<flow name>/<deployment name>` of
deployments/prefect.yaml)."""
from __future__ import annotations

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"

RETRAIN_DEPLOYMENT = "weekly-retrain/weekly"
ANALYSIS_DEPLOYMENT = "ab-analysis/ab-analysis"
CANARY_DEPLOYMENT = "canary/canary"
DRIFT_DEPLOYMENT = "drift-monitor/daily"
LIVE_DEPLOYMENT = "live-monitor/live"
DEPLOYMENTS = (RETRAIN_DEPLOYMENT, DRIFT_DEPLOYMENT, LIVE_DEPLOYMENT, ANALYSIS_DEPLOYMENT, CANARY_DEPLOYMENT)
