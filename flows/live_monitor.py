"""Live performance monitor: the champion's loss on served predictions whose outcomes arrived, against the loss its
offline holdout promised; on a credible degradation, an alert and a retrain.

    python -m flows.live_monitor [--no-trigger]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, get_run_logger

from flows.cli import run_flow
from flows.weekly_retrain import PROJECT


@flow(name="live-monitor", log_prints=True, persist_result=False)
def live_monitor(trigger: bool = True, now: str | None = None, project_dir: str | None = None) -> dict:
    """Measure the champion's live loss; on a credible degradation (monitor.tolerance above its holdout promise),
    send the `ct.model.degraded` alert, roll back when @previous-champion would have served the same units
    credibly better (monitor.rollback) and, with `trigger` and monitor.retrain, start weekly-retrain/weekly."""
    from stages.common import load_params
    from tasks import alerts, lineage, ui
    from tasks.monitor import live_loss, previous_champion, start_retrain

    log = get_run_logger()
    root = Path(project_dir or PROJECT)
    params = load_params(root / "params.yaml")
    model = f"model.{params.registry.model_name}"
    out = live_loss(str(root), now)
    log.info(f"live-monitor: {out['reason']}")
    if out["degraded"]:
        alerts.announce(alerts.DEGRADED, model, out["reason"], version=str(out["champion_version"]))
        if params.monitor.rollback:
            out["rollback"] = previous_champion(str(root), out, now)
            log.info(f"live-monitor: {out['rollback']['reason']}")
            if out["rollback"]["rolled_back"]:
                alerts.announce(alerts.ROLLED_BACK, model, f"live monitor: {out['rollback']['reason']}",
                                version=out["rollback"]["champion"])
        if trigger and params.monitor.retrain:
            out["triggered_flow_run"] = start_retrain(["live-degradation"])
    lineage.log_monitor_run(root, params.registry.experiment, "live-monitor", out)
    verdict, body = ui.live_monitor_page(out)
    ui.publish_monitor("live-monitor", f"Live monitor: {verdict}", body,
                       "The champion's live loss against its holdout promise")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-trigger", action="store_true", help="measure, alert and report; start no retrain")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    return run_flow(live_monitor, args.project_dir, lambda r: r["reason"], trigger=not args.no_trigger)


if __name__ == "__main__":
    raise SystemExit(main())
