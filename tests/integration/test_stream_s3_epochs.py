"""S3 shards read the way training reads them (tfship.data.streamed): one epoch at a time, each
cut short by `take`, with a hash split — through moto_server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import stream_shards as ss
from tests.helpers.moto import moto_fixture, use_test_credentials
from tfship.data.stream import HashSplit, StreamOptions, StreamSource

BUCKET = "tfship-stream-epochs"

s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)


def test_epochs_cut_short_release_their_staged_shards_and_the_hash_split_reads_s3(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    use_test_credentials(monkeypatch)
    paths = ss.write_tfrecords(tmp_path / "src", 12, 25)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for p in paths:
        s3.upload_file(str(p), BUCKET, f"d/{p.name}")
    cache = tmp_path / "cache"
    opts = StreamOptions(
        s3_endpoint_url=s3_endpoint,
        stage_dir=cache,
        stage_max_bytes=1,  # raised to the floor: (3 x 2 + 2) shards
        cycle_length=2,
        stage_workers=2,
        hash_split=HashSplit("id", 0.2, 0.2),
    )
    src = StreamSource.open(f"s3://{BUCKET}/d", ss.schema(), opts)
    try:
        for epoch in range(5):
            # 3 batches of a ~180-example split: the epoch's generator is closed early with
            # shards still open in the interleave. Before the fix each epoch left them in the
            # cache: 5 epochs stalled ~40 s over the bound (20 times) and left 24 files behind.
            batches = list(src.dataset(8, epoch=epoch, split="train").take(3))
            assert len(batches) == 3
        stats = src.stager.stats
        assert stats.over_bound == 0
        assert not [p for p in cache.rglob("*") if p.is_file()]
        assert stats.peak_bytes <= src.stager.max_bytes
    finally:
        src.close()
