"""Prefect flows: wiring only (weekly retrain, rollback, replay demo)."""
