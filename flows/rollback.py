"""Roll the production model back: @champion returns to @previous-champion.

    python -m flows.rollback [--model flight-delay]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import run_flow
from flows.weekly_retrain import PROJECT


@flow(name="rollback", log_prints=True, persist_result=False)
def rollback_champion(model: str | None = None, project_dir: str | None = None) -> dict:
    """Move @champion back to the version kept as @previous-champion; the demoted version stays registered."""
    from stages.common import load_params
    from tasks import alerts, lineage, registry

    root = Path(project_dir or PROJECT).resolve()
    params = load_params(root / "params.yaml")
    lineage.ensure_experiment(root, params.registry.experiment)
    out = registry.rollback(model or params.registry.model_name)
    get_run_logger().info(f"rollback: {out['model']} @champion is v{out['champion']} again (v{out['demoted']} demoted)")
    alerts.announce(alerts.ROLLED_BACK, f"model.{out['model']}", f"{out['model']} @champion is v{out['champion']} "
                    f"again; v{out['demoted']} demoted", version=out["champion"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="registered model name (default: registry.model_name in params.yaml)")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    return run_flow(rollback_champion, args.project_dir,
                    lambda r: f"{r['model']}: @champion -> v{r['champion']} (was v{r['demoted']})", model=args.model)


if __name__ == "__main__":
    raise SystemExit(main())
