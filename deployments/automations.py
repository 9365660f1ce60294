"""The Prefect automations the stack installs (`up` runs this against its API; re-running replaces them):

- "ct: mark unresponsive runs Crashed": a flow run that stops sending heartbeats (its process died, with or
  without its worker) is marked Crashed after CT_UNRESPONSIVE_SECONDS (3 heartbeats), which frees the weekly
  deployment's concurrency slot, so its next run proceeds. Flow runs send a heartbeat every
  CT_HEARTBEAT_SECONDS (30; Prefect's minimum), set for the worker's flow runs by `up`.
- with CT_ALERT_WEBHOOK_URL: a notification block `ct-alerts` (Prefect's custom webhook: POST
  {"subject", "body"} as JSON) and alerts through it on a flow run Failed or Crashed, and on the pipeline's own
  events (tasks/alerts.py): a batch quarantined, a promotion, an A/B test started, a rollback, an experiment
  that cannot finish, the champion's live performance degraded.

    python -m deployments.automations install      # PREFECT_API_URL of the stack in the environment
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

PREFIX = "ct: "
BLOCK = "ct-alerts"
TERMINAL = ("Completed", "Failed", "Cancelled", "Crashed")


def install(webhook_url: str | None, heartbeat_seconds: int, unresponsive_seconds: int) -> list[str]:
    """(Re)create this project's automations; returns their names."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState, SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    from tasks.alerts import EVENTS

    if unresponsive_seconds <= heartbeat_seconds:
        raise ValueError(f"CT_UNRESPONSIVE_SECONDS ({unresponsive_seconds}) must be longer than CT_HEARTBEAT_SECONDS "
                         f"({heartbeat_seconds}): a live run would be marked Crashed between two heartbeats")
    with get_client(sync_client=True) as client:
        for old in client.read_automations():
            if old.name.startswith(PREFIX):
                client.delete_automation(old.id)
    made = [Automation(
        name=f"{PREFIX}mark unresponsive runs Crashed",
        description=f"no heartbeat for {unresponsive_seconds} s (heartbeats every {heartbeat_seconds} s)",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in TERMINAL)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]}, for_each={"prefect.resource.id"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=unresponsive_seconds)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, name="Crashed", message=(
            f"no heartbeat for {unresponsive_seconds} s: the run's process stopped (with its worker, or the "
            f"machine); marked Crashed by the automation '{PREFIX}mark unresponsive runs Crashed'"))],
    ).create()]
    if webhook_url:
        from prefect.blocks.notifications import CustomWebhookNotificationBlock

        block = CustomWebhookNotificationBlock(name=BLOCK, url=webhook_url, method="POST",
                                               json_data={"subject": "{{subject}}", "body": "{{body}}"})
        block_id = block.save(BLOCK, overwrite=True)
        made.append(Automation(
            name=f"{PREFIX}alert on failed or crashed runs",
            trigger=EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                                 match={"prefect.resource.id": ["prefect.flow-run.*"]},
                                 posture=Posture.Reactive, threshold=1),
            actions=[SendNotification(
                block_document_id=block_id,
                subject="{{ flow.name }} / {{ flow_run.name }}: {{ flow_run.state.name }}",
                body="{{ flow_run.state.message }}\nrun: {{ flow_run|ui_url }}")],
        ).create())
        made.append(Automation(
            name=f"{PREFIX}alert on pipeline events",
            trigger=EventTrigger(expect=set(EVENTS), match={"prefect.resource.id": ["ct.*"]},
                                 posture=Posture.Reactive, threshold=1),
            actions=[SendNotification(block_document_id=block_id,
                                      subject="{{ event.event }}: {{ event.resource.name }}",
                                      body="{{ event.payload.summary }}")],
        ).create())
    return [a.name for a in made]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["install"])
    ap.parse_args(argv)
    heartbeat = int(os.environ.get("CT_HEARTBEAT_SECONDS", "30"))
    unresponsive = int(os.environ.get("CT_UNRESPONSIVE_SECONDS", str(3 * heartbeat)))
    try:
        names = install(os.environ.get("CT_ALERT_WEBHOOK_URL") or None, heartbeat, unresponsive)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(f"automation: {n}" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
