"""Deployments (prefect.yaml) and the local stack: Prefect server, worker, MLflow server."""
