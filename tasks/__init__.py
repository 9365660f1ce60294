"""Prefect tasks: thin adapters between the outside world (files, DVC, MLflow, registry) and `ml/`."""
