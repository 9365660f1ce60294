"""`python -m cli.init` on small files made here: what it chooses, and the errors it gives, in words."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from cli.init import main as init


def hourly(weeks: int = 12, seed: int = 0) -> pd.DataFrame:
    """Hourly sensor-like rows: a text category with a real 'None' value, a numeric column with 'NA' gaps."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2024-01-01", periods=24 * 7 * weeks, freq="h")
    x = rng.normal(10, 2, len(t))
    return pd.DataFrame({"stamp": t.strftime("%Y-%m-%d %H:%M"), "x": x.round(2),
                         "discount": rng.choice(["None", "coupon", "member"], len(t)),
                         "y": (3 * x + rng.normal(0, 1, len(t))).round(2)})


def write_csv(path, df: pd.DataFrame, na_rows: int = 30) -> None:
    text = df.to_csv(index=False).splitlines()
    for i in range(1, na_rows + 1):  # 'NA' marks a missing number, as many sensor exports do
        cells = text[i * 7].split(",")
        cells[1] = "NA"
        text[i * 7] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")


def test_init_keeps_a_none_category_and_reads_na_as_missing(tmp_path, capsys):
    write_csv(tmp_path / "shop.csv", hourly())
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "shop.csv"), "--target", "y", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    p = yaml.safe_load(params.read_text())
    s = p["source"]
    assert "None" not in s["na_values"] and "NA" in s["na_values"]
    assert "kept the text 'None' as a category of discount" in printed
    assert s["time_column"] == "stamp" and s["task"] == "regression" and s["categorical_features"] == ["discount"]
    assert s["unit_id_from"] == ["stamp"]  # one row per hour: the time identifies a row
    assert s["calendar"] == ["hour", "day_of_week", "month"]
    # 12 weeks of history: a third of it to train on, the first full window ending on a Monday (weeks run Mon-Sun)
    assert p["window"]["train_weeks"] == 4 and p["window"]["as_of"] == "2024-02-05"
    assert p["policy"]["cluster_column"] is None  # one row per time stamp: day-long blocks
    # the contract is calibrated as a whole: the replay's verdict is printed, the tolerances written
    assert "validation: the learned rules together reject" in printed and "budget 1%" in printed
    v = p["validation"]
    assert v["row_count_tolerance"] >= 0.5 and isinstance(v["column_tolerances"], dict)


@pytest.mark.parametrize("args,words", [
    (["--target", "price"], "--target: no column 'price' in the files"),
    (["--target", "y", "--time", "when"], "--time: no column 'when'"),
    (["--target", "discount>3"], "column 'discount' is not numeric"),
    (["--target", "y", "--drop", "nope"], "--drop: no column(s) 'nope'"),
])
def test_init_errors_name_the_option_and_the_column(tmp_path, capsys, args, words):
    write_csv(tmp_path / "shop.csv", hourly())
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "shop.csv"), *args, "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not params.exists()  # nothing written


def test_init_refuses_too_short_a_history(tmp_path, capsys):
    write_csv(tmp_path / "shop.csv", hourly(weeks=2), na_rows=3)
    assert init(["--data", str(tmp_path / "shop.csv"), "--target", "y",
                 "--params", str(tmp_path / "params.yaml")]) == 2
    assert "a weekly pipeline needs at least 3" in capsys.readouterr().err


def test_init_refuses_a_monthly_series_and_says_why(tmp_path, capsys):
    """A row a month per series (a price file): most weeks have no rows; a weekly window of such a file was
    written as 177 training weeks with '354 weekly runs' to follow, where only 123 weeks held any row."""
    months = pd.date_range("2000-01-01", periods=60, freq="MS")
    rows = [{"symbol": s, "date": m.strftime("%b %-d %Y"), "price": 10.0 + i + k}
            for k, s in enumerate(["A", "B", "C"]) for i, m in enumerate(months)]
    pd.DataFrame(rows).to_csv(tmp_path / "prices.csv", index=False)
    assert init(["--data", str(tmp_path / "prices.csv"), "--target", "price",
                 "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "the files have rows in 60 of the 258 weeks they span" in err and "not a weekly feed" in err, err
    assert "Traceback" not in err and not (tmp_path / "params.yaml").exists()


def test_a_token_that_marks_a_missing_number_is_read_as_missing(tmp_path, capsys):
    """Sensor exports mark a missing reading '?' (or '-'): read as text, the column was taken for an identifier
    (text with hundreds of values) and dropped; now the token is missing and the column a numeric feature."""
    from ml.sources import read_files

    df = hourly()
    df["reading"] = (np.random.default_rng(1).normal(50, 5, len(df)) + df["y"] / 10).round(1).astype(str)
    df.loc[df.index[::40], "reading"] = "?"
    df.to_csv(tmp_path / "shop.csv", index=False)
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "shop.csv"), "--target", "y", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    p = yaml.safe_load(params.read_text())
    assert "?" in p["source"]["na_values"] and "reading" in p["source"]["numeric_features"], printed
    assert "read '?' as missing: it stands for a missing number in reading" in printed
    from ml.config import parse_params

    frame = read_files(str(tmp_path / "shop.csv"), parse_params(p).source)
    assert frame["reading"].dtype.kind == "f" and frame["reading"].isna().sum() == len(df.index[::40])


def test_a_number_that_stands_for_a_missing_reading_is_read_as_missing(tmp_path, capsys):
    """A sensor export marks a missing reading -200 (fields split by ';', decimal commas). Taken as a reading,
    -200 drags every mean and quantile far below the column's range; it is read as missing instead."""
    from ml.config import parse_params
    from ml.sources import read_files
    from tests.conftest import SHARED

    station = pd.read_csv(sorted((SHARED / "datasets" / "beijing_air").glob("PRSA_Data_*.csv"))[2]).head(24 * 120)
    gaps = station["CO"].isna() | (np.arange(len(station)) % 97 == 0)
    station["CO"] = station["CO"].where(~gaps, -200)
    station["TEMP"] = station["TEMP"].fillna(-200)
    station.to_csv(tmp_path / "station.csv", index=False, sep=";", decimal=",")
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "station.csv"), "--target", "PM2.5", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    p = parse_params(yaml.safe_load(params.read_text()))
    assert "read '-200,0' as missing" in printed and "CO" in printed.split("read '-200,0' as missing")[1], printed
    frame = read_files(str(tmp_path / "station.csv"), p.source)
    assert frame["CO"].isna().sum() == gaps.sum() and frame["CO"].min() > 0
    assert frame["TEMP"].min() > -30 and frame["TEMP"].notna().all() == station["TEMP"].ne(-200).all()


def test_a_column_added_to_the_feed_later_is_named_and_not_used(tmp_path, capsys):
    """Monthly exports where a column appears from the third month on: init stopped ('its columns differ from the
    first file's'); it now onboards on the columns every file has and names the others."""
    df = hourly(weeks=12)
    (tmp_path / "in").mkdir()
    for i, part in enumerate(np.array_split(df, 3)):
        part = part.assign(firmware="v2") if i == 2 else part
        part.to_csv(tmp_path / "in" / f"shop-{i}.csv", index=False)
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "in" / "*.csv"), "--target", "y", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    s = yaml.safe_load(params.read_text())["source"]
    assert "columns not in every file, not used: 'firmware' (1 of 3 files)" in printed
    assert "firmware" not in s["categorical_features"] and s["categorical_features"] == ["discount"]


def test_parquet_with_zoned_times_and_a_flag_column_onboards(tmp_path, capsys):
    """Parquet files as a warehouse exports them: times carrying their zone, a bool column, a category dtype.
    init crashed on the bool column (numpy cannot subtract booleans) and took the calendar in UTC."""
    from ml.config import parse_params
    from ml.sources import read_files
    from tests.conftest import BIKE_CSV

    d = pd.read_csv(BIKE_CSV).head(24 * 7 * 14)
    ts = (pd.to_datetime(d["dteday"]) + pd.to_timedelta(d["hr"], unit="h")).dt.tz_localize(
        "America/New_York", ambiguous="NaT", nonexistent="NaT")
    f = pd.DataFrame({"ts": ts, "workingday": d["workingday"].astype(bool), "temp": d["temp"], "hum": d["hum"],
                      "weather": d["weathersit"].map({1: "clear", 2: "mist", 3: "rain", 4: "storm"}).astype("category"),
                      "cnt": d["cnt"]}).dropna(subset=["ts"])
    (tmp_path / "in").mkdir()
    f.to_parquet(tmp_path / "in" / "rides.parquet")
    params = tmp_path / "params.yaml"
    assert init(["--data", str(tmp_path / "in" / "*.parquet"), "--target", "cnt", "--params", str(params)]) == 0
    p = parse_params(yaml.safe_load(params.read_text()))
    assert p.source.timezone == "America/New_York" and "workingday" in p.source.numeric_features
    frame = read_files(str(tmp_path / "in" / "*.parquet"), p.source)
    assert frame["workingday"].dtype == "float64" and set(frame["workingday"]) == {0.0, 1.0}
    assert (frame["cal_hour"].to_numpy() == d.loc[f.index, "hr"].to_numpy()).all()  # local hours
