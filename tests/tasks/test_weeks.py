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
