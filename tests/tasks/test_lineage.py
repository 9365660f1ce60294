"""What the flow logs to MLflow is accepted whatever the user's columns are called."""
from __future__ import annotations

import pytest

from tasks.lineage import mlflow_key


def test_params_named_after_columns_with_brackets_are_logged(tmp_path):
    """A weekly run logs params.yaml flattened (`validation.ranges.<column>`): a column named 'T (degC)', as
    climate exports name theirs, made MLflow refuse the batch and the run fail before it validated anything."""
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("keys", artifact_location=tmp_path.as_uri()))
    raw = ["validation.ranges.T (degC)", "validation.ranges.CO(GT)", "validation.ranges.rel hum %",
           "source.numeric_features"]
    with pytest.raises(MlflowException, match="Names may only contain"):
        client.log_batch(run.info.run_id, params=[Param(raw[0], "[-40, 50]")])
    client.log_batch(run.info.run_id, params=[Param(mlflow_key(k), "1") for k in raw])
    logged = client.get_run(run.info.run_id).data.params
    assert set(logged) == {"validation.ranges.T _degC_", "validation.ranges.CO_GT_", "validation.ranges.rel hum _",
                           "source.numeric_features"}
