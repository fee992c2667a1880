"""S3 shards through moto_server on 127.0.0.1: listing, bucket errors, staging with a bounded
cache, and the same pipeline and fingerprint as local shards."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.helpers import stream_shards as ss
from tests.helpers.moto import moto_fixture, use_test_credentials
from tfship.data.stream import StreamOptions, StreamSource, list_location, profile
from tfship.data.stream.staging import Stager
from tfship.errors import DataError, ExitCode, InfraError

BUCKET = "tfship-stream-test"
FILES, PER_FILE = 8, 25

s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)


@pytest.fixture(scope="module")
def uploaded(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    import boto3

    mp = pytest.MonkeyPatch()
    use_test_credentials(mp)
    local = tmp_path_factory.mktemp("s3src")
    paths = ss.write_tfrecords(local, FILES, PER_FILE)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    for p in paths:
        s3.upload_file(str(p), BUCKET, f"data/train/{p.name}")
    s3.put_object(Bucket=BUCKET, Key="data/train/_SUCCESS", Body=b"")
    yield f"s3://{BUCKET}/data/train", local
    mp.undo()


def test_listing_has_etags_and_sizes(uploaded: tuple[str, Path], s3_endpoint: str) -> None:
    url, local = uploaded
    shards = list_location(url, s3_endpoint_url=s3_endpoint)
    assert [s.rel for s in shards] == [f"part-{k:05d}.tfrecord" for k in range(FILES)]
    assert all(s.checksum and len(s.checksum) == 32 for s in shards)  # MD5 ETag
    assert [s.size for s in shards] == [(local / s.rel).stat().st_size for s in shards]
    globbed = list_location(
        f"s3://{BUCKET}/data/train/part-0000[0-2].tfrecord", s3_endpoint_url=s3_endpoint
    )
    assert len(globbed) == 3


def test_bucket_errors(
    uploaded: tuple[str, Path], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retry backoff against a closed port
    with pytest.raises(DataError) as err:
        list_location("s3://no-such-bucket/x/", s3_endpoint_url=s3_endpoint)
    assert err.value.exit_code == ExitCode.DATA and "no-such-bucket" in str(err.value)
    assert "404" in str(err.value)
    with pytest.raises(DataError, match="glob matches no files"):
        list_location(f"s3://{BUCKET}/data/train/*.csv", s3_endpoint_url=s3_endpoint)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(InfraError) as err2:
        list_location(f"s3://{BUCKET}/data/", s3_endpoint_url=dead)
    assert err2.value.exit_code == ExitCode.INFRA and "cannot be reached" in str(err2.value)


def test_staged_pipeline_reads_everything_within_the_cache_bound(
    uploaded: tuple[str, Path], s3_endpoint: str, tmp_path: Path
) -> None:
    url, local = uploaded
    shard_size = max(p.stat().st_size for p in local.iterdir())
    bound = 5 * shard_size  # the floor for cycle_length 1: 3 x 1 + 2 shards
    opts = StreamOptions(
        s3_endpoint_url=s3_endpoint,
        stage_dir=tmp_path / "cache",
        stage_max_bytes=bound,
        stage_workers=2,
        cycle_length=1,
        seed=5,
    )
    src = StreamSource.open(url, ss.schema(), opts)
    ids = [int(i) for x, _ in src.dataset(16) for i in x["id"].numpy()]
    assert sorted(ids) == list(range(FILES * PER_FILE))
    st = src.stager.stats
    assert st.downloaded_files == FILES and st.evicted_files == FILES  # released as read
    assert st.peak_bytes <= bound
    assert not list((tmp_path / "cache").iterdir())
    # The same order as the same shards read from local disk with the same seed? No: local
    # files are shuffled by tf.data, staged ones by the stager; both are seeded and repeatable.
    again = StreamSource.open(url, ss.schema(), opts)
    assert [int(i) for x, _ in again.dataset(16) for i in x["id"].numpy()] == ids
    src.close()
    again.close()
    # Two epochs, 2 files read at once, a cache of 3 x 2 + 2 shards (= the 8 files... of 16
    # over two epochs): the generator waits for releases and never deadlocks the interleave.
    two = StreamSource.open(
        url,
        ss.schema(),
        StreamOptions(
            s3_endpoint_url=s3_endpoint,
            stage_dir=tmp_path / "c2",
            stage_max_bytes=1,
            cycle_length=2,
            stage_workers=3,
        ),
    )
    ids2 = [int(i) for x, _ in two.dataset(16, epochs=2) for i in x["id"].numpy()]
    assert sorted(ids2) == sorted(list(range(FILES * PER_FILE)) * 2)
    assert two.stager.stats.peak_bytes <= 8 * shard_size
    assert two.stager.stats.over_bound == 0
    two.close()


def test_s3_profile_uses_the_content_sample(
    uploaded: tuple[str, Path], s3_endpoint: str, tmp_path: Path
) -> None:
    url, local = uploaded
    opts = StreamOptions(s3_endpoint_url=s3_endpoint, stage_dir=tmp_path / "c")
    remote = profile(StreamSource.open(url, ss.schema(), opts), sample_files=2, sample_records=40)
    here = profile(StreamSource.open(str(local), ss.schema()), sample_files=2, sample_records=40)
    assert remote.sample_digest == here.sample_digest  # same bytes sampled
    assert remote.fingerprint != here.fingerprint  # the listing differs: ETags vs none
    assert remote.statistics["features"] == here.statistics["features"]


def test_stager_order_and_eviction(
    uploaded: tuple[str, Path], s3_endpoint: str, tmp_path: Path
) -> None:
    url, _ = uploaded
    shards = list_location(url, s3_endpoint_url=s3_endpoint)
    stager = Stager(tmp_path, max_bytes=1, workers=4, endpoint_url=s3_endpoint)
    seen = []
    for p in stager.paths(list(reversed(shards))):
        assert len(list(tmp_path.glob("*.tfrecord"))) == 1  # bound 1 byte: one at a time
        seen.append(Path(p).name.split("-", 2)[2])
        stager.release(p)  # what the pipeline's tail does once the reader finished the shard
    assert seen == [s.rel for s in reversed(shards)]
    assert stager.stats.downloaded_files == FILES == stager.stats.evicted_files
    assert not list(tmp_path.iterdir())


def test_corrupt_s3_shard_is_named(
    uploaded: tuple[str, Path], s3_endpoint: str, tmp_path: Path
) -> None:
    import boto3

    _, local = uploaded
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    data = (local / "part-00001.tfrecord").read_bytes()
    s3.put_object(
        Bucket=BUCKET,
        Key="bad/part-00000.tfrecord",
        Body=(local / "part-00000.tfrecord").read_bytes(),
    )
    s3.put_object(Bucket=BUCKET, Key="bad/part-00001.tfrecord", Body=data[:-5])
    cache = tmp_path / "cache"
    src = StreamSource.open(
        f"s3://{BUCKET}/bad/",
        ss.schema(),
        StreamOptions(s3_endpoint_url=s3_endpoint, stage_dir=cache),
    )
    with pytest.raises(DataError) as err, src.named_errors():
        [x for x, _ in src.dataset(16)]
    assert f"s3://{BUCKET}/bad/part-00001.tfrecord is corrupt" in str(err.value)
    src.close()
    assert not list(cache.iterdir())
