"""Pure ML library: sources, schema, features, time splits, models, metrics, statistics, drift, policy.

Nothing here imports prefect, mlflow or dvc, reads environment variables or touches global state.
"""
