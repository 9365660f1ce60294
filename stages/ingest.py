"""Land weekly batches from the configured source in the raw store (`data/raw/<as_of>.parquet`), through the gate.

`python -m stages.ingest [--as-of 2013-06-02]` (also the DVC stage `land`) writes the newest week and the training
weeks before it that are not there yet. Every week it lands passes the same data contract as a new weekly batch,
learned from the weeks before it as the weekly flow learns it; a week that fails, that was quarantined before, or
that is too small is not landed but listed, with its reason, in `data/raw/_landed.json`. A change of the source
settings is detected there too: the batches landed under the old settings move to `data/archive/` and the window
is landed again, so old and new batches never mix.
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ml.config import Params, check_columns_exist
from ml.contract import accepted_history
from ml.sources import load_source, source_fingerprint
from ml.split import describe_window, slice_week, training_weeks, week_bounds, week_label, weeks_with_rows, window_weeks
from stages.common import (
    WEEK_FILE,
    atomic_write,
    cli,
    fmt_int,
    load_params,
    read_week,
    write_json,
    write_parquet,
    write_week,
)

MANIFEST = "_landed.json"


def batch_path(raw_dir: str | Path, as_of: date) -> Path:
    """Where the batch of the week ending (exclusive) at `as_of` lives."""
    return Path(raw_dir) / f"{as_of.isoformat()}.parquet"


@dataclass
class Landing:
    """What one backfill did: weeks landed, and weeks of the window left out (with the reason)."""

    landed: list[date] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)


def read_manifest(raw_dir: str | Path) -> dict:
    """The raw store's record: source fingerprint and the weeks left out, each with its reason."""
    path = Path(raw_dir) / MANIFEST
    if not path.exists():
        return {"fingerprint": None, "excluded": {}}
    return json.loads(path.read_text())


def write_manifest(raw_dir: str | Path, manifest: dict) -> None:
    write_json(Path(raw_dir) / MANIFEST, manifest)


def excluded_weeks(raw_dir: str | Path) -> dict[str, str]:
    """Weeks of the raw store that were not landed, with the reason ({'2013-05-05': 'quarantined: ...'})."""
    return read_manifest(raw_dir).get("excluded", {})


def window(raw_dir: str | Path, as_of: date, n: int) -> list[date]:
    """The training weeks of the week ending at `as_of`, as the landing chose them (`ml.split.window_weeks`: the
    n newest weeks with data, reaching back over a silent feed); the n calendar weeks when none was recorded."""
    recorded = read_manifest(raw_dir).get("windows", {}).get(as_of.isoformat())
    return [date.fromisoformat(w) for w in recorded] if recorded else training_weeks(as_of, n)


ACCEPTED = "accepted.json"  # in a quarantine folder: a person accepted the week (`python -m cli.accept`)


def land_file(raw_dir: str | Path, as_of: date, staged: Path) -> Path:
    """Move a batch file into the raw store as the week `as_of` (a rename: atomic); a different earlier copy of that
    week is moved to data/archive/ first, not lost. An identical copy stays and `staged` goes."""
    dest = batch_path(raw_dir, as_of)
    if dest.exists():
        if dest.read_bytes() == staged.read_bytes():
            staged.unlink()
            return dest
        archive = Path(raw_dir).parent / "archive" / f"{as_of.isoformat()}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.parquet"
        archive.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dest), archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged.replace(dest)
    return dest


def quarantined_weeks(quarantine_dir: Path) -> dict[str, Path]:
    """Weeks with a batch in quarantine (`<as_of>-<time>` folders): never landed later from the source. A week a
    person accepted (`accepted.json` in one of its folders: `python -m cli.accept`) is not among them."""
    out: dict[str, Path] = {}
    accepted: set[str] = set()
    if quarantine_dir.is_dir():
        for d in sorted(quarantine_dir.iterdir()):
            week = d.name[:10]
            if d.is_dir() and is_date(week):
                out.setdefault(week, d)
                if (d / ACCEPTED).exists():
                    accepted.add(week)
    return {w: d for w, d in out.items() if w not in accepted}


def quarantine_frame(quarantine_dir: Path, as_of: date, batch: pd.DataFrame | None, reasons: list[str],
                     gx_result: dict | None = None, file: Path | None = None, contract: dict | None = None) -> Path:
    """Keep a rejected batch with its reasons in data/quarantine/<week>-<utc time>/ (nothing is deleted):
    the frame as parquet, or the delivered file byte for byte."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    where = quarantine_dir / f"{as_of.isoformat()}-{stamp}"
    where.mkdir(parents=True, exist_ok=True)
    if gx_result is not None:
        write_json(where / "gx_result.json", gx_result)
    if contract is not None:  # the rules the batch was judged by, and the weeks they were learned from
        write_json(where / "contract.json", contract)
    atomic_write(where / "reasons.txt", lambda t: t.write_text("\n".join(reasons) + "\n"))
    if file is not None:
        atomic_write(where / file.name, lambda t: shutil.copyfile(file, t))
    if batch is not None:
        write_parquet(where / "batch.parquet", batch)
    return where


HELD = "held by the joint checks"  # a manifest reason: the week passed the contract, its columns relate oddly


def held_dir(raw_dir: str | Path) -> Path:
    """Where held weeks' batches are kept: `data/held/`, beside the raw store."""
    return Path(raw_dir).parent / "held"


def held_path(raw_dir: str | Path, as_of: date) -> Path:
    return held_dir(raw_dir) / f"{as_of.isoformat()}.parquet"


def hold_batch(raw_dir: str | Path, as_of: date, reasons: str, record: dict, without: tuple[str, ...] = ()) -> Path:
    """Move a landed week out of the raw store to data/held/ (with its checks as JSON): it passed the contract but
    its columns relate oddly, and the manifest says why. Nothing is deleted; `python -m cli.accept <week>` accepts
    the week. Without `without`, the week is kept out of every training window. With `without` (the features whose
    relation to the others broke), a copy of the week without them goes back into the raw store (`land_without`)."""
    dest = held_path(raw_dir, as_of)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_json(dest.with_suffix(".json"), record)
    shutil.move(str(batch_path(raw_dir, as_of)), dest)
    manifest = read_manifest(raw_dir)
    why = f"{HELD}: {reasons}; batch kept in {dest}"
    if without:
        land_without(raw_dir, as_of, pd.read_parquet(dest), without, why, manifest)
    else:
        manifest.setdefault("excluded", {})[as_of.isoformat()] = why
    write_manifest(raw_dir, manifest)
    return dest


def land_without(raw_dir: str | Path, as_of: date, batch: pd.DataFrame, without: tuple[str, ...], why: str,
                 manifest: dict) -> Path:
    """Land a copy of a kept-out week (held, or quarantined) with the columns `without` empty, so later windows
    train on the rest of it (its target, the features that still hold) but never on the broken values; `manifest`
    lists the week under `masked` with `why` (the caller writes it). `python -m cli.accept <week>` lands the
    delivered batch over the copy."""
    staged = Path(raw_dir) / f".{as_of.isoformat()}.without.parquet"
    write_parquet(staged, batch.assign(**{c: np.nan for c in without}))
    dest = land_file(raw_dir, as_of, staged)  # an earlier, different copy of the week is archived, not lost
    manifest.setdefault("masked", {})[as_of.isoformat()] = {"columns": list(without), "reason": why}
    manifest.get("excluded", {}).pop(as_of.isoformat(), None)
    return dest


def landed_whole(raw_dir: str | Path, as_of: date) -> None:
    """A week landed as delivered: an earlier copy without some columns (`land_without`) no longer stands."""
    manifest = read_manifest(raw_dir)
    if manifest.get("masked", {}).pop(as_of.isoformat(), None) is not None:
        write_manifest(raw_dir, manifest)


def masked_weeks(raw_dir: str | Path) -> dict[str, list[str]]:
    """Kept-out weeks (held, or quarantined) in the raw store without their broken columns: {'2013-06-16': ['hour']}."""
    return {w: m["columns"] for w, m in read_manifest(raw_dir).get("masked", {}).items()}


def held_weeks(raw_dir: str | Path) -> set[date]:
    """Weeks the joint checks held (out of training windows or in them without their broken columns; still part of
    the accepted history). A quarantined week in training without some columns is not among them."""
    masked = read_manifest(raw_dir).get("masked", {})
    return {date.fromisoformat(w) for w, why in excluded_weeks(raw_dir).items() if why.startswith(HELD)} | {
        date.fromisoformat(w) for w, m in masked.items() if m["reason"].startswith(HELD)}


def check_source(params: Params, raw_dir: str | Path, log=print) -> Path | None:
    """Archive the landed batches when they were landed under other source settings; returns the archive."""
    raw_dir = Path(raw_dir)
    manifest = read_manifest(raw_dir)
    fingerprint = source_fingerprint(params.source)
    if manifest.get("fingerprint") == fingerprint:
        return None
    batches = sorted(raw_dir.glob("*.parquet"))
    archived = None
    if batches:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        archived = raw_dir.parent / "archive" / f"source-change-{stamp}"
        archived.mkdir(parents=True, exist_ok=True)
        for f in [*batches, raw_dir / MANIFEST]:
            if f.exists():
                shutil.move(str(f), archived / f.name)
        log(f"ingest: the source settings changed since {len(batches)} batch(es) were landed (fingerprint "
            f"{manifest.get('fingerprint') or 'unknown'} -> {fingerprint}); moved them to {archived} and landing "
            f"the window again")
    write_manifest(raw_dir, {"fingerprint": fingerprint, "excluded": {}})
    return archived


def backfill(params: Params, raw_dir: str | Path, as_of: date, base: Path | None = None,
             include_newest: bool = True, frame: pd.DataFrame | None = None, log=print) -> Landing:
    """Land the missing weeks of the training window (and the newest week) through the gate.

    A week is left out, with its reason in the manifest, when the source has no rows for it, when it was
    quarantined before, or when it fails the contract learned from the weeks before it (it is then quarantined)."""
    raw_dir = Path(raw_dir)
    quarantine_dir = raw_dir.parent / "quarantine"
    check_source(params, raw_dir, log)
    result = Landing()
    manifest = read_manifest(raw_dir)
    calendar, frame = _window_of(params, raw_dir, manifest, as_of, base, frame, log)
    weeks = calendar + ([as_of] if include_newest else [])
    known = manifest["excluded"]
    missing = [w for w in weeks if not batch_path(raw_dir, w).exists() and w.isoformat() not in known]
    held = quarantined_weeks(quarantine_dir)
    for w in [w for w in missing if w.isoformat() in held]:
        known[w.isoformat()] = f"quarantined before ({held[w.isoformat()]}); never landed from the source again"
        missing.remove(w)
    if not missing:
        write_manifest(raw_dir, manifest)
        result.excluded = {w.isoformat(): known[w.isoformat()] for w in weeks if w.isoformat() in known}
        return result
    frame = load_source(params.source, base) if frame is None else frame
    check_columns_exist(params, frame.columns, "the source")
    tcol = params.source.time_column
    if include_newest and as_of in missing:
        slice_week(frame, tcol, as_of)  # no rows for the newest week: an error naming it and the data's range
    fetched = {w: slice_week(frame, tcol, w, allow_empty=True) for w in missing}
    for w, batch in fetched.items():
        if batch.empty:
            known[w.isoformat()] = f"the source has no rows for the week {week_label(w)}"
    candidates = {w: b for w, b in fetched.items() if not b.empty}
    if candidates:
        result.landed = _gate_and_land(params, raw_dir, frame, weeks, candidates, manifest, as_of, log)
    write_manifest(raw_dir, manifest)
    result.excluded = {w.isoformat(): known[w.isoformat()] for w in weeks if w.isoformat() in known}
    for week, reason in result.excluded.items():
        if week in {w.isoformat() for w in missing}:
            log(f"ingest: week {week}: left out: {reason}")
    return result


def _window_of(params: Params, raw_dir: Path, manifest: dict, as_of: date, base: Path | None,
               frame: pd.DataFrame | None, log) -> tuple[list[date], pd.DataFrame | None]:
    """The training window's weeks for `as_of` (the calendar weeks before it; after a silent feed the latest weeks
    with rows, chosen once and kept in the manifest), and the source frame when it had to be read."""
    n = params.window.train_weeks
    windows = manifest.setdefault("windows", {})
    calendar = training_weeks(as_of, n)
    if as_of.isoformat() in windows:
        return [date.fromisoformat(w) for w in windows[as_of.isoformat()]], frame
    if all(batch_path(raw_dir, w).exists() for w in calendar):
        return calendar, frame
    frame = load_source(params.source, base) if frame is None else frame
    tcol = params.source.time_column
    if len(frame):
        oldest = week_of(frame[tcol].min(), as_of)
        chosen = window_weeks(as_of, n, weeks_with_rows(frame[tcol], as_of), oldest)
        if chosen != calendar:
            log(f"ingest: {describe_window(as_of, chosen, n)}")
            windows[as_of.isoformat()] = [w.isoformat() for w in chosen]
            return chosen, frame
    return calendar, frame


def _gate_and_land(params: Params, raw_dir: Path, frame: pd.DataFrame, weeks: list[date],
                   candidates: dict[date, pd.DataFrame], manifest: dict, as_of: date, log) -> list[date]:
    """Each fetched week in order through the gate: landed in `raw_dir`, or quarantined with its reasons in the
    manifest's excluded weeks; a quarantined training week that failed only value rules of some features lands
    without them (`land_without`; the week judged, `as_of`, never does). Returns the weeks landed whole."""
    n, tcol = params.window.train_weeks, params.source.time_column
    known = manifest["excluded"]
    quarantine_dir = raw_dir.parent / "quarantine"
    landed = {w: pd.read_parquet(batch_path(raw_dir, w)) for w in weeks if batch_path(raw_dir, w).exists()}
    learned, has_rows = None, weeks_with_rows(frame[tcol], as_of)
    out = []
    for w, batch in sorted(candidates.items()):
        # the week's own reference, as the weekly flow would have had it: the weeks before it, landed or not
        # (only as a reference; each is judged in turn itself)
        before = [landed.get(r) if r in landed else slice_week(frame, tcol, r, allow_empty=True)
                  for r in reference_weeks(frame, tcol, w, n, has_rows)]
        if learned is None:  # the value rules of the weeks landed together: learned once, before the first
            from ml.contract import learn_contract

            history = accepted_history(frame, tcol, w, params.validation.learn_weeks, rejected_weeks(raw_dir))
            learned = learn_contract(params.source, params.validation, history, w, n)
        reasons, gx_result, contract, without = gate(
            params, batch, [b for b in before if b is not None and not b.empty], w, learned=learned)
        if reasons:
            where = quarantine_frame(quarantine_dir, w, batch, reasons, gx_result, contract=contract)
            why = f"failed the data contract ({'; '.join(reasons)}); quarantined in {where}"
            if without and w != as_of:
                land_without(raw_dir, w, batch, without, why, manifest)
                log(f"ingest: week {week_label(w)}: {fmt_int(len(batch))} rows landed WITHOUT "
                    f"{', '.join(map(repr, without))} (left empty): {'; '.join(reasons)} (quarantined in {where})")
                continue
            known[w.isoformat()] = why
            log(f"ingest: week {week_label(w)}: {fmt_int(len(batch))} rows NOT landed: {'; '.join(reasons)} "
                f"(quarantined in {where})")
            continue
        write_parquet(batch_path(raw_dir, w), batch)
        out.append(w)
        log(f"ingest: week {week_label(w)}: {fmt_int(len(batch))} rows passed the contract -> "
            f"{batch_path(raw_dir, w)}")
    return out


def week_of(t: pd.Timestamp, as_of: date) -> date:
    """The `as_of` key (aligned with `as_of`'s weekday) of the week holding time `t`."""
    start = week_bounds(as_of)[0]
    return as_of + timedelta(days=7 * int((t - start) // pd.Timedelta(days=7)))


def reference_weeks(frame: pd.DataFrame, tcol: str, as_of: date, n: int,
                    has_rows: set[date] | None = None) -> list[date]:
    """The weeks a week is judged against when landed from the source: its own window (`window_weeks`).
    `has_rows`: `weeks_with_rows(frame[tcol], d)` for any `d` on `as_of`'s weekday, when already known."""
    if not len(frame):
        return training_weeks(as_of, n)
    has_rows = weeks_with_rows(frame[tcol], as_of) if has_rows is None else has_rows
    return window_weeks(as_of, n, has_rows, week_of(frame[tcol].min(), as_of))


def rejected_weeks(raw_dir: str | Path) -> set[date]:
    """Weeks the gate refused (quarantined, failed the contract): never part of the accepted history. A held week
    passed the contract: it stays in the history (out of training windows only)."""
    raw_dir = Path(raw_dir)
    out = {date.fromisoformat(w) for w in quarantined_weeks(raw_dir.parent / "quarantine")}
    out |= {date.fromisoformat(w) for w, why in excluded_weeks(raw_dir).items()
            if not why.startswith(("the source has no rows", HELD))}
    return out


def week_contract(params: Params, reference: pd.DataFrame, history: pd.DataFrame | None, as_of: date, weeks: int,
                  learned=None, weeks_before: int | None = None):
    """(suite, contract) of the week ending at `as_of`: structural rules from params, value rules learned from
    `reference` (its window) and `history` (the accepted weeks before it, `ml.contract.accepted_history`), or
    the `learned` contract given (a backfill learns once for the weeks it lands together). `weeks_before`: a
    backfilled week's weeks before it at the start of the history (`ml.contract.short_history`)."""
    import copy

    from ml.contract import hold_window, learn_contract, short_history
    from ml.suite import build_suite

    contract = copy.deepcopy(learned) if learned is not None else learn_contract(
        params.source, params.validation, history, as_of, params.window.train_weeks)
    if weeks_before is not None:
        contract = short_history(contract, params.source, weeks_before, params.window.train_weeks)
    start, end = week_bounds(as_of)
    if len(reference):  # after a silent feed the window lies further back than `weeks` calendar weeks
        tcol = params.source.time_column
        first = reference[tcol].min()
        weeks = max(weeks, int((start - first) // pd.Timedelta(days=7)) + 1)
        contract = hold_window(contract, params.source, int((start - reference[tcol].max()) // pd.Timedelta(days=7)))
    suite = build_suite(params.source, contract.validation, reference, start, end, weeks)
    return suite, contract


def contract_record(suite: list, contract) -> dict:
    """What is saved with a run or a quarantined batch: the learned contract and every rule of the suite."""
    return {**contract.to_json(), "suite": [{"type": e.type, "kwargs": e.kwargs, "description": e.description,
                                             **({"companion": e.companion} if e.companion else {})}
                                            for e in suite]}


def gate(params: Params, batch: pd.DataFrame, before: list[pd.DataFrame], as_of: date,
         learned) -> tuple[list[str], dict, dict, tuple[str, ...]]:
    """The batch contract for a week landed from the source: its reference learned from the weeks before it (as in
    the weekly flow), its value rules' tolerances from the `learned` contract (`ml.contract.learn_contract`):
    (reasons it fails, GX result, contract record, the features a failing week can train without:
    `ml.suite.failed_features`); no reasons = pass. At the start of the history, with fewer than two weeks before it,
    a week has nothing to learn from and meets the fixed rules alone; with fewer than
    `ml.contract.MIN_QUANTILE_WEEKS` (or the window, when shorter), it meets no quantile rule."""
    from ml.suite import failed_features
    from ml.validation import validate_batch

    if len(before) < 2:  # rules learned from the batch itself (as if it were last week) pass: fixed rules decide
        tcol = params.source.time_column
        before = [batch.assign(**{tcol: batch[tcol] - pd.Timedelta(days=7)})]
    reference = pd.concat(before, ignore_index=True)
    suite, contract = week_contract(params, reference, None, as_of, params.window.train_weeks, learned,
                                    weeks_before=len(before))
    report = validate_batch(batch, suite)
    return ([] if report.success else report.failures), report.result, contract_record(suite, contract), \
        failed_features(params.source, report, batch)


def is_date(s: str) -> bool:
    """Whether `s` is an ISO date: the name of a landed batch or the start of a quarantine folder."""
    try:
        date.fromisoformat(s)
        return True
    except ValueError:
        return False


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default="data/raw", help="raw batch store")
    ap.add_argument("--as-of", type=date.fromisoformat,
                    help=f"week to land and record in {WEEK_FILE} (default: the week there, else window.as_of)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    as_of = args.as_of or read_week(args.params) or params.window.as_of
    Path(args.raw).mkdir(parents=True, exist_ok=True)
    result = backfill(params, args.raw, as_of, base=Path(args.params).resolve().parent)
    write_week(args.params, as_of)  # the week the later stages read (DVC: an output of this stage)
    if not result.landed:
        have = params.window.train_weeks + 1 - len(result.excluded)
        left = f"; {len(result.excluded)} left out (see {Path(args.raw) / MANIFEST})" if result.excluded else ""
        print(f"ingest: {have} of {params.window.train_weeks + 1} weeks up to {as_of} in {args.raw}{left}")


if __name__ == "__main__":
    main()
