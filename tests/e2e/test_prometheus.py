"""Dashboards people already use: a real Prometheus server (Debian's) scrapes the prediction service with the
project's scrape config, and every query of the Grafana dashboard evaluates on what it scraped."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest
import yaml

from serving.ablog import ABLog, store_url
from serving.traffic import ServiceProcess, send_outcomes, send_predictions
from tests.conftest import ROOT, free_port, tool_env
from tests.deployments.conftest import instances, outcomes_of, register, serving_project, train, week

pytestmark = pytest.mark.e2e
DASHBOARD = ROOT / "deployments" / "grafana" / "serving-dashboard.json"


def query(base: str, expr: str) -> dict:
    with urllib.request.urlopen(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10) as r:
        return json.load(r)


def test_prometheus_scrapes_the_service_and_the_dashboard_queries_evaluate(tmp_path, flights):
    from stages.common import load_params

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make browser` (Debian package prometheus)")
    project = serving_project(tmp_path / "project")
    params = load_params(project / "params.yaml")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    register(uri, params, train(flights, params, "2013-05-19", max_iter=15), week(flights, "2013-05-19"), "champion")
    traffic = week(flights, "2013-05-26").head(300)
    port, prom_port = free_port(), free_port()
    config = yaml.safe_load((ROOT / "deployments" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{prom_port}"
    with ServiceProcess(project, port, env=tool_env(MLFLOW_TRACKING_URI=uri)) as svc, \
            open(tmp_path / "prometheus.log", "wb") as prom_log:
        prom = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                env=tool_env(), stdout=subprocess.DEVNULL, stderr=prom_log)
        try:
            wait_for(base, "count(up == 1)", 1, tmp_path)  # the service is a healthy target before traffic starts
            rows = instances(traffic, params)
            for upto in (150, len(rows)):  # a scrape between the two halves: the rate has an increase to see
                send_predictions(svc.http, rows[upto - 150:upto], batch=50)
                wait_for(base, "sum(ct_predictions_total)", upto, tmp_path)
            send_outcomes(svc.http, outcomes_of(traffic, params))
            assert svc.http.post("/predict", json={"unit_id": "x"}).status_code == 422
            wait_for(base, "sum(ct_feedback_total)", len(traffic), tmp_path)
            wait_for(base, 'sum(ct_outcomes_scored_total{variant="champion"})', len(traffic), tmp_path)
            wait_for(base, 'sum(ct_requests_rejected_total{endpoint="/predict",status="422"})', 1, tmp_path)
            dashboard = json.loads(DASHBOARD.read_text())
            exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
            assert len(exprs) >= 9
            for expr in exprs:
                answer = query(base, expr)
                assert answer["status"] == "success", (expr, answer)
            by_variant = query(base, "sum by (variant) (rate(ct_predictions_total[5m]))")["data"]["result"]
            assert {r["metric"]["variant"] for r in by_variant} == {"champion"} and float(by_variant[0]["value"][1]) > 0
            assert float(query(base, "sum(ct_predictions_total)")["data"]["result"][0]["value"][1]) == len(traffic)
            # the live loss Prometheus sees is the MAE of what was served against the outcomes that arrived
            live = query(base, "sum(ct_outcome_loss_total) / sum(ct_outcomes_scored_total)")["data"]["result"]
            with ABLog(store_url(project)) as log:
                counts = log.counts()
                frame = log.answered_by("1", datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None))  # naive UTC
            mae = (frame["outcome"].astype(float) - frame["prediction"]).abs().mean()
            assert counts["feedback"] == len(traffic) and float(live[0]["value"][1]) == pytest.approx(mae, rel=1e-6)
            assert query(base, 'sum(ct_model_seconds_count{variant="champion"})')["data"]["result"]
        finally:
            prom.terminate()
            prom.wait(20)


def wait_for(base: str, expr: str, at_least: float, tmp_path, timeout: float = 60) -> None:
    end, value = time.time() + timeout, 0.0
    while time.time() < end:
        try:
            result = query(base, expr)["data"]["result"]
            value = float(result[0]["value"][1]) if result else 0.0
            if value >= at_least:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{expr} = {value} after {timeout:.0f} s (want >= {at_least}); prometheus log: "
                         f"{(tmp_path / 'prometheus.log').read_text()[-2000:]}")
