"""Onboard your own data: profile CSV/Parquet files and write a complete, commented params.yaml for them.

    python -m cli.init --data 'data/incoming/*.csv' --target cnt
    python -m cli.init --data '../air/*.csv' --target 'PM2.5>75' --timezone Asia/Shanghai   # a derived label

It prints every choice and why; then `dvc repro` and `python -m flows.weekly_retrain` run with no further edit.
The previous params.yaml is kept in data/archive/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from stages.common import PROJECT


def _sentinels(text, numbers) -> set[str]:
    """The text of a number that stands for a missing reading (-200, -999, 9999): an integer repeated in at least
    0.1 % of the rows (and 3), beyond every other value of the column by more than three times their IQR, or
    -99 or below in a column whose other values are never negative."""
    import numpy as np

    values = numbers.dropna()
    if len(values) < 100:
        return set()
    out = set()
    for v in {values.min(), values.max()}:
        hits = values == v
        rest = values[~hits]
        if v != round(v) or hits.sum() < max(3, 0.001 * len(values)) or len(rest) < 10:
            continue
        q25, q75 = np.quantile(rest, [0.25, 0.75])
        far = q75 > q25 and (v < rest.min() - 3 * (q75 - q25) or v > rest.max() + 3 * (q75 - q25))
        if far or v <= -99 < 0 <= rest.min():  # or a large negative code in a column of readings never negative
            out |= set(text[numbers == v].unique())
    return out


def na_handling(files: list[Path]) -> tuple[list[str] | None, list[str]]:
    """CSV text to read as missing: pandas' defaults, except words that only ever appear in text columns
    (e.g. 'None' as a real category), plus a short token that stands for a missing number in a column of numbers
    (`?`, `-`: read as text, the column would have become an identifier and been dropped) or a number far
    from every other that does (`_sentinels`: -200); returns (na_values or None for the defaults, notes)."""
    import pandas as pd
    from pandas._libs.parsers import STR_NA_VALUES

    from ml.sources import CSV, csv_dialect

    markers: set[str] = set()  # tokens used for missing numbers
    in_text: dict[str, set[str]] = {}  # token -> text columns where it appears as a value
    extra: dict[str, set[str]] = {}  # tokens beyond pandas' defaults that mark missing numbers -> columns
    for f in files:
        if not f.name.lower().endswith(CSV):
            continue
        dialect = csv_dialect(f)
        raw = pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""], low_memory=False, **dialect)
        for c in raw.columns:
            col = raw[c].dropna()
            numbers = pd.to_numeric(col.str.replace(",", ".") if dialect.get("decimal") else col, errors="coerce")
            others = col[numbers.isna()]
            if len(col) and numbers.notna().mean() > 0.9 and 0 < others.nunique() <= 2 \
                    and others.str.fullmatch(r"\W{1,3}|[A-Za-z/ ]{1,12}").all():
                for t in set(others.unique()) - STR_NA_VALUES:
                    extra.setdefault(t, set()).add(str(c))
            for t in _sentinels(col, numbers):
                extra.setdefault(t, set()).add(str(c))
            tokens = set(col.unique()) & STR_NA_VALUES
            if not tokens:
                continue
            rest = col[~col.isin(tokens)]
            numeric = pd.to_numeric(rest, errors="coerce").notna().mean() > 0.99 if len(rest) else True
            for t in tokens:
                (markers.add(t) if numeric else in_text.setdefault(t, set()).add(str(c)))
    kept = sorted(t for t in in_text if t not in markers)
    extra_notes = [f"read {t!r} as missing: it stands for a missing number in {', '.join(sorted(cols))} "
                   f"(source.na_values; a number far from every other value, or text in a column of numbers)"
                   for t, cols in sorted(extra.items())]
    if not kept and not extra:
        used = sorted(markers | set(in_text))
        note = f"missing values: pandas' defaults ({', '.join(map(repr, used)) or 'none'} found in the files)"
        return None, [note]
    na = sorted((STR_NA_VALUES - set(kept)) | {""} | set(extra))
    notes = [f"kept the text {t!r} as a category of {', '.join(sorted(in_text[t]))} (it never marks a missing "
             f"number here; source.na_values)" for t in kept]
    return na, notes + extra_notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder or glob of CSV/Parquet files, e.g. 'data/incoming/*.csv'")
    ap.add_argument("--target", required=True, help="the column to predict, or a label 'column>value'")
    ap.add_argument("--task", choices=("regression", "classification"), help="default: inferred from the target")
    ap.add_argument("--time", help="the time column (default: found in the files, or composed from parts)")
    ap.add_argument("--timezone", default="UTC", help="zone of naive times in the files, e.g. Asia/Shanghai")
    ap.add_argument("--unit-id", help="a column identifying one row (default: found, else synthesised)")
    ap.add_argument("--drop", nargs="*", default=[], help="columns never to use as features (known only later)")
    ap.add_argument("--model-name", help="registered model name (default: from the data folder and target)")
    ap.add_argument("--params", default=str(PROJECT / "params.yaml"), help="file to write")
    args = ap.parse_args(argv)
    try:
        return _init(args)
    except (ValueError, FileNotFoundError) as e:  # ProfileError, SourceError, ConfigError: the user's to fix
        print(f"init: {e}", file=sys.stderr)
        return 2


def _init(args) -> int:
    from ml.config import check_columns_exist, parse_params
    from ml.profile import profile, week_span
    from ml.render import render_params
    from ml.sources import load_source, read_table, source_files
    from stages.common import atomic_write, week_path

    out = Path(args.params).resolve()
    base = out.parent
    files = source_files(args.data, Path.cwd())
    stored = _relative(files[0].parent if "*" not in args.data and Path(args.data).is_dir() else args.data, base)
    na_values, na_notes = na_handling(files)
    frames = {f.name: read_table(f, tuple(na_values) if na_values is not None else None) for f in files}
    dataset = _dataset_name(files)
    prof = profile(frames, path=stored, target=args.target, task=args.task, time=args.time, timezone=args.timezone,
                   na_values=na_values, unit_id=args.unit_id, model_name=args.model_name, dataset=dataset,
                   drop=tuple(args.drop))
    prof.notes[0:0] = na_notes
    template = (PROJECT / "params.yaml").read_text() if (PROJECT / "params.yaml").exists() else ""
    text = render_params(prof, template)
    import yaml

    params = parse_params(yaml.safe_load(text))  # what we write must load, and name only real columns
    frame = load_source(params.source, base)
    check_columns_exist(params, frame.columns, "the files")
    if out.exists():
        keep = base / "data" / "archive" / f"params-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.yaml"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, keep)
        print(f"init: the previous {out.name} is kept as {keep}")
    atomic_write(out, lambda t: t.write_text(text))
    if (week := week_path(out)).exists():  # the last run's week belongs to the previous params
        week.unlink()
    s = prof.summary
    print(f"init: {s['rows']:,} rows in {s['files']} file(s), {s['first']:%Y-%m-%d} .. {s['last']:%Y-%m-%d} "
          f"({s['weeks']} weeks, ~{s['weekly_rows']:,} rows a week)")
    for note in prof.notes:
        print(f"  - {note}")
    as_of = params.window.as_of
    print(f"init: wrote {out}; the first week is {week_span(as_of)} (window.as_of {as_of})")
    print("next:  dvc repro                        # land the window through the data contract, train, evaluate")
    print("       python -m flows.weekly_retrain   # one weekly run: validate, train, compare, decide (repeat weekly)")
    return 0


def _relative(path, base: Path) -> str:
    """The data path as written in params.yaml: relative to the params file when it lies below it."""
    text = str(path)
    p = Path(text)
    absolute = p if p.is_absolute() else (Path.cwd() / p)
    try:
        return str(absolute.resolve().relative_to(base)) if "*" not in text else \
            str(Path(absolute.parent.resolve().relative_to(base)) / absolute.name)
    except ValueError:
        return str(absolute.parent.resolve() / absolute.name) if "*" in text else str(absolute.resolve())


def _dataset_name(files: list[Path]) -> str:
    """The data folder's name, unless it is a generic one (incoming, data, raw): then the first file's stem."""
    folder = files[0].parent.name
    return files[0].stem if folder.lower() in ("incoming", "data", "raw", "input", "inputs", "") else folder


if __name__ == "__main__":
    raise SystemExit(main())
