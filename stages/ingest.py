"""Land weekly batches from the configured source in the raw store (`data/raw/<as_of>.parquet`).

`python -m stages.ingest [--as-of 2013-06-02]` writes the newest week and the training weeks before it that
are not there yet. A batch file holds every source column of one week, as delivered.
"""
from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pandas as pd

from ml.config import Params
from ml.sources import load_source
from ml.split import slice_week, training_weeks, week_label
from stages.common import cli, fmt_int, load_params, write_parquet


def batch_path(raw_dir: str | Path, as_of: date) -> Path:
    """Where the batch of the week ending (exclusive) at `as_of` lives."""
    return Path(raw_dir) / f"{as_of.isoformat()}.parquet"


def fetch_batch(params: Params, as_of: date, frame: pd.DataFrame | None = None, base: Path | None = None) -> pd.DataFrame:
    """The rows of one week from the source (raises EmptyWeekError naming the week if there are none)."""
    frame = load_source(params.source, base) if frame is None else frame
    return slice_week(frame, params.source.time_column, as_of)


def backfill(params: Params, raw_dir: str | Path, as_of: date, base: Path | None = None,
             include_newest: bool = True) -> list[Path]:
    """Write the missing batches of the training window (and the newest week); returns the files written."""
    weeks = training_weeks(as_of, params.window.train_weeks) + ([as_of] if include_newest else [])
    missing = [w for w in weeks if not batch_path(raw_dir, w).exists()]
    if not missing:
        return []
    frame = load_source(params.source, base)
    # Slice every week before writing any, newest first, so an empty week names itself and leaves no trace.
    batches = {w: slice_week(frame, params.source.time_column, w) for w in sorted(missing, reverse=True)}
    written = []
    for w in missing:
        written.append(write_parquet(batch_path(raw_dir, w), batches[w]))
        print(f"ingest: week {week_label(w)}: {fmt_int(len(batches[w]))} rows -> {batch_path(raw_dir, w)}")
    return written


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default="data/raw", help="raw batch store")
    ap.add_argument("--as-of", type=date.fromisoformat, help="week to land (default: window.as_of in params)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    as_of = args.as_of or params.window.as_of
    written = backfill(params, args.raw, as_of, base=Path(args.params).resolve().parent)
    if not written:
        print(f"ingest: all {params.window.train_weeks + 1} weeks up to {as_of} already in {args.raw}")


if __name__ == "__main__":
    main()
