"""Command-line programs that are not flows: onboarding new data (`python -m cli.init`) and the demo's replay of
real weeks (`python -m cli.replay`, `make demo`). The flows they run live in `flows/`."""
