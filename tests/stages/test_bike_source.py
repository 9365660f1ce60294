"""The generic files source on UCI bike sharing (Fanaee-T & Gama 2013), onboarded by `cli.init`, through the
real DVC pipeline."""
import json
import sys

import yaml

from tests.conftest import edit_params, run


def test_bike_sharing_through_dvc(bike_repo):
    out = run(["dvc", "repro"], bike_repo).stdout  # the land stage brings the window in through the gate
    params = yaml.safe_load((bike_repo / "params.yaml").read_text())
    assert params["source"]["time_parts"] == {"date": "dteday", "hour": "hr"}
    assert {"casual", "registered"} <= set(params["source"]["drop"])  # they sum to the target
    landed = list((bike_repo / "data/raw").glob("*.parquet"))
    assert len(landed) == params["window"]["train_weeks"] + 1, out
    m = json.loads((bike_repo / "data/eval/metrics.json").read_text())
    assert 150 < m["model"]["rows"] <= 24 * 7
    assert m["model"]["mae"] < 0.5 * m["baseline"]["mae"], m
    assert "up to date" in run(["dvc", "repro"], bike_repo).stdout


def test_bike_target_that_does_not_exist(bike_repo):
    edit_params(bike_repo, source={"target": "count"})
    p = run([sys.executable, "-m", "stages.ingest"], bike_repo, check=False)
    assert p.returncode == 2
    assert "hour.csv" in p.stderr and "'count' (source.target)" in p.stderr
    assert "Traceback" not in p.stderr


def test_bike_linear_and_mlp_families_run(bike_repo):
    run([sys.executable, "-m", "stages.ingest"], bike_repo)
    for family in ("linear", "mlp"):
        edit_params(bike_repo, train={"family": family})
        out = run(["dvc", "repro"], bike_repo).stdout
        assert f"train: {family}" in out
        m = json.loads((bike_repo / "data/eval/metrics.json").read_text())
        assert m["model"]["mae"] < m["baseline"]["mae"], (family, m)
