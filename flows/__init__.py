"""Prefect flows: wiring only (weekly retrain, rollback, the monitors, A/B analysis, canary); the command-line
programs that are not flows are in `cli/`."""
