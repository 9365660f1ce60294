"""Accept a week the pipeline kept out: a batch the data contract quarantined, or one the joint checks held, that a
person has looked at and found ordinary (a reading past the record, a polluted week, a holiday).

    python -m cli.accept 2014-05-18            # the week's date, as in data/quarantine/<date>-<time>/
    python -m cli.accept data/quarantine/2014-05-18-20261206T101500000000Z

The batch lands in data/raw/ (an earlier copy of that week is archived, not lost), so the next weekly run trains
on it, and the contract counts it among the accepted weeks it learns its value rules from: a week like it passes
from then on. The quarantine folder (or data/held/) keeps everything it held, plus `accepted.json` saying who
accepted the week and when. Nothing is deleted.
"""
from __future__ import annotations

import argparse
import getpass
import shutil
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from stages.common import PROJECT
from stages.ingest import ACCEPTED


class AcceptError(ValueError):
    """Nothing to accept, or a batch that cannot be landed: the message says which and where to look."""


def kept_batch(project: Path, week: str) -> tuple[Path, str]:
    """The batch the pipeline kept out for `week` (a date, or a quarantine folder): its file, and 'quarantined' or
    'held'. The newest quarantine of the week wins; a week both held and quarantined cannot be."""
    from stages.ingest import held_path, quarantined_weeks

    data = project / "data"
    given = Path(week)
    if given.is_dir() or (project / given).is_dir():
        folder = given if given.is_dir() else project / given
        return _quarantined_batch(folder), "quarantined"
    try:
        as_of = date.fromisoformat(week)
    except ValueError:
        raise AcceptError(f"'{week}' is neither a week's date (YYYY-MM-DD) nor a quarantine folder") from None
    held = held_path(data / "raw", as_of)
    if held.exists():
        if held.with_suffix(".accepted.json").exists():
            raise AcceptError(f"the held week {as_of} was accepted already (see {held.with_suffix('.accepted.json')})")
        return held, "held"
    folders = sorted((data / "quarantine").glob(f"{as_of.isoformat()}-*"))
    if not folders:
        waiting = ", ".join(sorted(quarantined_weeks(data / "quarantine"))) or "none"
        raise AcceptError(f"no quarantined or held batch for the week {as_of} in {data / 'quarantine'} or "
                          f"{held.parent} (weeks in quarantine: {waiting})")
    return _quarantined_batch(folders[-1]), "quarantined"


def _quarantined_batch(folder: Path) -> Path:
    batch = folder / "batch.parquet"
    if (folder / ACCEPTED).exists():
        raise AcceptError(f"{folder} was accepted already (see {folder / ACCEPTED})")
    if not batch.exists():
        raise AcceptError(f"{folder} holds no batch.parquet: the delivered file could not be read as a table "
                          f"(see {folder / 'reasons.txt'}); fix the file and run the week again")
    return batch


def accept(project: Path, week: str, note: str = "") -> dict:
    """Land the kept-out batch of `week` in data/raw/ and record who accepted it; what was done, for people."""
    import pandas as pd

    from stages.common import write_json
    from stages.ingest import land_file, read_manifest, write_manifest

    batch, kind = kept_batch(project, week)
    frame = pd.read_parquet(batch)  # a batch that does not read is not landed
    as_of = date.fromisoformat((batch.stem if kind == "held" else batch.parent.name)[:10])
    raw = project / "data" / "raw"
    staged = raw / f".{as_of.isoformat()}.accepted.parquet"  # a copy: the kept batch stays where it is
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(batch, staged)
    dest = land_file(raw, as_of, staged)  # an earlier, different copy of the week goes to data/archive/
    manifest = read_manifest(raw)
    was = manifest.get("excluded", {}).pop(as_of.isoformat(), None)
    masked = manifest.get("masked", {}).pop(as_of.isoformat(), None)  # a held week in training without columns
    if was is not None or masked is not None:
        write_manifest(raw, manifest)
    record = {"week": as_of.isoformat(), "accepted_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "by": getpass.getuser(), "note": note, "was": kind, "landed": str(dest), "rows": int(len(frame))}
    # the quarantine folder, or data/held/, stays as it was: the record goes beside the batch
    where = batch.parent / ACCEPTED if kind == "quarantined" else batch.with_suffix(".accepted.json")
    write_json(where, record)
    return {**record, "record": str(where)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("week", help="the week's date (as in data/quarantine/<date>-<time>/) or a quarantine folder")
    ap.add_argument("--note", default="", help="why the week is ordinary (kept in accepted.json)")
    ap.add_argument("--project-dir", default=str(PROJECT))
    args = ap.parse_args(argv)
    try:
        done = accept(Path(args.project_dir).resolve(), args.week, args.note)
    except (AcceptError, OSError, ValueError) as e:
        print(f"accept: {e}", file=sys.stderr)
        return 2
    print(f"accepted the {done['was']} week {done['week']} ({done['rows']:,} rows): landed in {done['landed']}; "
          f"recorded in {done['record']}. The next weekly run trains on it, and the contract learns from it.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
