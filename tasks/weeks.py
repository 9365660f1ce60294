"""Which week a run processes."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from ml.config import ConfigError, Params


def resolve_as_of(params: Params, project: Path, as_of: str | date | None) -> date:
    """The given week, else ("next" or nothing) the week after the newest landed batch, else window.as_of."""
    if isinstance(as_of, date):
        return as_of
    if as_of and str(as_of).lower() != "next":
        try:
            return date.fromisoformat(str(as_of))
        except ValueError:
            raise ConfigError(f"parameter 'as_of' must be a date like 2013-06-02, got {as_of!r}") from None
    landed = sorted(p.stem for p in (project / "data" / "raw").glob("*.parquet"))
    dates = [date.fromisoformat(s) for s in landed if _is_date(s)]
    return max(dates) + timedelta(days=7) if dates else params.window.as_of


def _is_date(s: str) -> bool:
    try:
        date.fromisoformat(s)
        return True
    except ValueError:
        return False
