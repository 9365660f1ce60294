"""Shapes of data the shared datasets do not have as delivered, built from them: what a new user's files look like.

Each shape writes CSV files into a folder and returns the `cli.init` arguments for them:

- `daily_numeric`: bike sharing by day (day.csv): one row a day, numeric features only (no column that could slice
  the errors), the time as text carrying UTC offsets that change with daylight saving time ("...-04:00").
- `aqi_gap`: Beijing air quality at six stations (six rows per time stamp), the PM2.5 reading banded into AQI
  classes (a multiclass text target whose top class is rare), with six months cut out of the middle: a feed that
  stops and comes back.
- `numeric_binary`: bike sharing by hour, numeric columns only, a binary target (more than 300 rentals).
- `target_only`: bike sharing by hour, the time and the rentals alone: the model has only the calendar.

    python -m benchmarks.shapes aqi_gap /tmp/aqi     # writes the files, prints the init arguments
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BIKE = SHARED / "bike_sharing"
BEIJING = SHARED / "beijing_air"
# US AQI breakpoints of PM2.5 (µg/m³); the last band is rare (0.2-1 % of hours at a station)
AQI_BANDS = [(35, "good"), (75, "moderate"), (115, "unhealthy-sensitive"), (150, "unhealthy"),
             (250, "very-unhealthy"), (500, "hazardous"), (np.inf, "beyond-index")]
GAP = ("2015-03-01", "2015-09-01")  # the aqi_gap feed is silent from the first date until the second
STATIONS = 6


def daily_numeric(out: Path) -> list[str]:
    """One row a day, numeric only, offsets in the time text."""
    d = pd.read_csv(BIKE / "day.csv")
    local = pd.to_datetime(d["dteday"]).dt.tz_localize("America/New_York") + pd.Timedelta(hours=8)
    frame = pd.DataFrame({"reported_at": local.map(lambda t: t.isoformat()),
                          **{c: d[c] for c in ("temp", "atemp", "hum", "windspeed", "cnt")}})
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "bike_daily.csv", index=False)
    return ["--data", str(out / "bike_daily.csv"), "--target", "cnt"]


def aqi_band(pm25: pd.Series) -> pd.Series:
    edges = [-np.inf, *[b for b, _ in AQI_BANDS]]
    return pd.cut(pm25, edges, labels=[name for _, name in AQI_BANDS]).astype(object)


def aqi_gap(out: Path, stations: int = STATIONS) -> list[str]:
    """Multiclass AQI bands with a rare class, several rows per hour, months without data."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(BEIJING.glob("*.csv"))[:stations]:
        d = pd.read_csv(f)
        d = d[d["PM2.5"].notna()]
        when = pd.to_datetime(d[["year", "month", "day"]])
        d = d[(when < GAP[0]) | (when >= GAP[1])]
        d = d.assign(aqi=aqi_band(d["PM2.5"])).drop(columns=["PM2.5", "PM10"])
        d.to_csv(out / f.name, index=False)
    return ["--data", str(out / "*.csv"), "--target", "aqi", "--timezone", "Asia/Shanghai"]


def numeric_binary(out: Path) -> list[str]:
    """Hourly, numeric features only, a binary label."""
    d = pd.read_csv(BIKE / "hour.csv")
    frame = d[["dteday", "hr", "temp", "atemp", "hum", "windspeed", "cnt"]]
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "bike_hourly.csv", index=False)
    return ["--data", str(out / "bike_hourly.csv"), "--target", "cnt>300"]


def target_only(out: Path) -> list[str]:
    """The time and the target, nothing else: a series to forecast from the calendar alone."""
    d = pd.read_csv(BIKE / "hour.csv")
    when = pd.to_datetime(d["dteday"]) + pd.to_timedelta(d["hr"], unit="h")
    frame = pd.DataFrame({"hour_starting": when.dt.strftime("%Y-%m-%d %H:%M"), "rentals": d["cnt"]})
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "rentals.csv", index=False)
    return ["--data", str(out / "rentals.csv"), "--target", "rentals"]


SHAPES = {"daily_numeric": daily_numeric, "aqi_gap": aqi_gap, "numeric_binary": numeric_binary,
          "target_only": target_only}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in SHAPES:
        print(f"usage: python -m benchmarks.shapes {{{'|'.join(SHAPES)}}} OUT_DIR", file=sys.stderr)
        return 2
    print(" ".join(repr(a) if " " in a or "*" in a else a for a in SHAPES[argv[0]](Path(argv[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
