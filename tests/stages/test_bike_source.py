"""The generic files source on UCI bike sharing (Fanaee-T & Gama 2013), through the real DVC pipeline."""
import json
import sys

from tests.conftest import edit_params, run


def test_bike_sharing_through_dvc(bike_repo):
    run([sys.executable, "-m", "stages.ingest"], bike_repo)
    assert len(list((bike_repo / "data/raw").glob("*.parquet"))) == 9
    run(["dvc", "repro"], bike_repo)
    m = json.loads((bike_repo / "data/eval/metrics.json").read_text())
    assert m["model"]["rows"] == 24 * 7 or 150 < m["model"]["rows"] <= 24 * 7
    assert m["model"]["mae"] < 0.5 * m["baseline"]["mae"], m


def test_bike_target_that_does_not_exist(bike_repo):
    edit_params(bike_repo, source={"target": "count"})
    p = run([sys.executable, "-m", "stages.ingest"], bike_repo, check=False)
    assert p.returncode == 2
    assert "hour.csv" in p.stderr and "'count' (source.target)" in p.stderr


def test_bike_linear_and_mlp_families_run(bike_repo):
    run([sys.executable, "-m", "stages.ingest"], bike_repo)
    for family in ("linear", "mlp"):
        edit_params(bike_repo, train={"family": family})
        out = run(["dvc", "repro"], bike_repo).stdout
        assert f"train: {family}" in out
        m = json.loads((bike_repo / "data/eval/metrics.json").read_text())
        assert m["model"]["mae"] < m["baseline"]["mae"], (family, m)
