"""Which week a run takes: the week after the newest batch landed from this source, never one of another source."""
from datetime import date
from pathlib import Path

import yaml

from ml.config import parse_params
from ml.sources import source_fingerprint
from stages.ingest import write_manifest
from tasks.weeks import resolve_as_of

ROOT = Path(__file__).resolve().parents[2]


def test_next_week_follows_this_sources_batches_only(tmp_path):
    params = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "2013-07-07.parquet").write_bytes(b"")
    assert resolve_as_of(params, tmp_path, None) == params.window.as_of  # no manifest: unknown source
    write_manifest(raw, {"fingerprint": "another-source", "excluded": {}})
    assert resolve_as_of(params, tmp_path, None) == params.window.as_of  # landed from other files: not continued
    write_manifest(raw, {"fingerprint": source_fingerprint(params.source), "excluded": {}})
    assert resolve_as_of(params, tmp_path, "next") == date(2013, 7, 14)
    assert resolve_as_of(params, tmp_path, "2013-06-02") == date(2013, 6, 2)


def test_a_quarantined_week_does_not_stop_the_scheduled_runs(tmp_path):
    """The gate refused the newest week: the next scheduled run takes the week after it (the refused one waits for
    a person in data/quarantine/), instead of refusing the same week every week."""
    params = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "2013-07-07.parquet").write_bytes(b"")
    write_manifest(raw, {"fingerprint": source_fingerprint(params.source), "excluded": {}})
    refused = tmp_path / "data" / "quarantine" / "2013-07-14-20261206T101500000000Z"
    refused.mkdir(parents=True)
    assert resolve_as_of(params, tmp_path, None) == date(2013, 7, 21)
    (refused / "accepted.json").write_text("{}")  # accepted but not landed (yet): it is the week to run
    assert resolve_as_of(params, tmp_path, None) == date(2013, 7, 14)
