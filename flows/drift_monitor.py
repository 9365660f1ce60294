"""Drift monitor: the newest data vs the champion's training window; on a calibrated drift alarm, start a retrain.

    python -m flows.drift_monitor [--no-trigger]
"""
from __future__ import annotations

import argparse

from prefect import flow, get_run_logger

from flows.cli import run_flow
from flows.weekly_retrain import PROJECT


@flow(name="drift-monitor", log_prints=True, persist_result=False)
def drift_monitor(trigger: bool = True, project_dir: str | None = None) -> dict:
    """Measure drift; on a calibrated alarm (drift.retrain_share: null) or when the target or at least
    drift.retrain_share of the features drifted, start weekly-retrain/weekly for the new week."""
    from tasks import ui
    from tasks.monitor import drift_vs_champion, start_retrain

    log = get_run_logger()
    out = drift_vs_champion(project_dir or str(PROJECT))
    log.info(f"drift-monitor: {out['reason']}")
    if out["should_retrain"] and trigger:
        out["triggered_flow_run"] = start_retrain(["drift-triggered"], as_of=out["week"])
    verdict = ("retrain started" if out.get("triggered_flow_run") else
               "retrain needed (trigger off)" if out["should_retrain"] else "no retrain needed")
    ui.publish_monitor("drift-monitor", f"Drift monitor: {verdict}", f"{out['reason']}\n",
                       "Why the drift monitor did (or did not) start a retrain")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-trigger", action="store_true", help="measure and report only")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    return run_flow(drift_monitor, args.project_dir, lambda r: r["reason"], trigger=not args.no_trigger)


if __name__ == "__main__":
    raise SystemExit(main())
