"""The pipeline's own events, sent to Prefect's event stream, where the stack's automations turn them into alerts
(deployments/automations.py). The resource is the registered model (or the week, for a batch); the flow run
that sent the event is related automatically. An event that cannot be sent is logged and never fails a run."""
from __future__ import annotations

import logging

QUARANTINED = "ct.batch.quarantined"
HELD = "ct.batch.held"
PROMOTED = "ct.model.promoted"
AB_STARTED = "ct.model.ab-test-started"
CANARY_STARTED = "ct.model.canary-started"
ROLLED_BACK = "ct.model.rolled-back"
UNFINISHABLE = "ct.experiment.cannot-finish"
DEGRADED = "ct.model.degraded"
EVENTS = (QUARANTINED, HELD, PROMOTED, AB_STARTED, CANARY_STARTED, ROLLED_BACK, UNFINISHABLE, DEGRADED)

log = logging.getLogger(__name__)


def announce(event: str, resource: str, summary: str, **payload: str) -> None:
    """Emit `event` about `resource` (e.g. "model.flight-delay", "week.2013-06-02") with a one-line summary."""
    assert event in EVENTS, event
    try:
        from prefect.events import emit_event

        emit_event(event=event, resource={"prefect.resource.id": f"ct.{resource}", "prefect.resource.name": resource},
                   payload={"summary": summary, **payload})
    except Exception as e:  # an alert is a side channel: the run's result stands without it
        log.warning(f"event {event} not sent: {e}")
