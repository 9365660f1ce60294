"""DVC stage `prepare`: training window (N weeks) and holdout (newest week) from the raw batches."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ml.config import Params
from ml.sources import check_batch_columns
from ml.split import EmptyWeekError, describe_window, week_label
from stages.common import cli, fmt_int, load_stage_params, write_parquet
from stages.ingest import batch_path, excluded_weeks, masked_weeks, window


def read_batches(params: Params, raw_dir: str | Path, weeks, skip_excluded: bool = True) -> pd.DataFrame:
    """Concatenate the raw batches of `weeks`, keeping the configured columns; errors name the file.

    Weeks the landing left out (no rows, quarantined, failed the contract: see data/raw/_landed.json) are
    skipped; a week that is simply absent is an error saying how to land it."""
    cols = list(params.source.columns)
    excluded = excluded_weeks(raw_dir) if skip_excluded else {}
    frames = []
    for w in weeks:
        path = batch_path(raw_dir, w)
        if not path.exists():
            if w.isoformat() in excluded:
                continue
            raise FileNotFoundError(f"{path}: no batch for the week {week_label(w)}; land the window with "
                                    f"`python -m stages.ingest --as-of {params.window.as_of}` (or `dvc repro`)")
        df = pd.read_parquet(path)
        check_batch_columns(df, params.source, str(path))
        if df.empty:
            raise EmptyWeekError(f"{path}: the batch of week {week_label(w)} has no rows")
        frames.append(df[cols])
    if not frames:
        reasons = "; ".join(f"{w}: {excluded[w.isoformat()]}" for w in weeks if w.isoformat() in excluded)
        raise EmptyWeekError(f"{raw_dir}: none of the weeks {week_label(weeks[0]).split('..')[0]}.."
                             f"{week_label(weeks[-1]).split('..')[1]} could be landed ({reasons})")
    return pd.concat(frames, ignore_index=True)


def drop_unlabelled(df: pd.DataFrame, target: str, what: str) -> pd.DataFrame:
    n = int(df[target].isna().sum())
    if n:
        print(f"prepare: dropped {fmt_int(n)} {what} row(s) without '{target}'")
    return df[df[target].notna()].reset_index(drop=True)


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args(argv)
    params = load_stage_params(args.params)
    w = params.window
    weeks = window(args.raw, w.as_of, w.train_weeks)
    if (why := describe_window(w.as_of, weeks, w.train_weeks)):
        print(f"prepare: {why}")
    target = params.source.target
    excluded = excluded_weeks(args.raw)
    if w.as_of.isoformat() in excluded:
        raise EmptyWeekError(f"the newest week {week_label(w.as_of)} was not landed: {excluded[w.as_of.isoformat()]}")
    without = masked_weeks(args.raw)
    for week in weeks:
        if week.isoformat() in excluded:
            print(f"prepare: training week {week_label(week)} left out: {excluded[week.isoformat()]}")
        elif week.isoformat() in without:
            print(f"prepare: training week {week_label(week)} trains without "
                  f"{', '.join(map(repr, without[week.isoformat()]))} (its broken values; see data/raw/_landed.json)")
    train = drop_unlabelled(read_batches(params, args.raw, weeks), target, "training")
    holdout = drop_unlabelled(read_batches(params, args.raw, [w.as_of]), target, "holdout")
    out = Path(args.out)
    write_parquet(out / "train.parquet", train)
    write_parquet(out / "holdout.parquet", holdout)
    print(f"prepare: training window {week_label(weeks[0]).split('..')[0]}..{week_label(weeks[-1]).split('..')[1]} "
          f"({len(weeks)} weeks, {fmt_int(len(train))} rows); "
          f"holdout {week_label(w.as_of)} ({fmt_int(len(holdout))} rows)")


if __name__ == "__main__":
    main()
