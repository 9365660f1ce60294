"""Which week a run processes."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from ml.config import ConfigError, Params
from ml.sources import source_fingerprint
from stages.ingest import held_dir, is_date, quarantined_weeks, read_manifest


def resolve_as_of(params: Params, project: Path, as_of: str | date | None) -> date:
    """The given week, else ("next" or nothing) the week after the newest week processed - landed, held or
    quarantined - else window.as_of. A quarantined week waits in data/quarantine/ for a person (`cli.accept`, or a
    corrected batch run with its date) while the scheduled runs go on with the weeks after it."""
    if isinstance(as_of, date):
        return as_of
    if as_of and str(as_of).lower() != "next":
        try:
            return date.fromisoformat(str(as_of))
        except ValueError:
            raise ConfigError(f"parameter 'as_of' must be a date like 2013-06-02, got {as_of!r}") from None
    raw = project / "data" / "raw"
    if read_manifest(raw).get("fingerprint") != source_fingerprint(params.source):
        return params.window.as_of  # batches of another source (or none): they are re-landed, not continued
    # a held or quarantined week was processed too (kept in data/held/, data/quarantine/): the next run goes on
    landed = [p.stem for d in (raw, held_dir(raw)) for p in d.glob("*.parquet")]
    dates = [date.fromisoformat(s) for s in [*landed, *quarantined_weeks(project / "data" / "quarantine")]
             if is_date(s)]
    return max(dates) + timedelta(days=7) if dates else params.window.as_of

