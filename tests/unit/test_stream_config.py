"""`data.stream` config (issue 16): what it accepts and refuses, and that a URL stays a URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tfship.config import PipelineConfig

FEATURES = {"v": {"kind": "numeric", "shape": [3]}}


def cfg(**data):
    base = {"source": "tfrecord", "path": "s3://bucket/train/part-*", "label": "y"}
    return PipelineConfig.model_validate({"data": {**base, **data}})


def test_an_object_store_location_is_kept_as_written_not_turned_into_a_path():
    c = cfg(features=FEATURES, stream={"hash_key": "id"})
    assert c.data.path == "s3://bucket/train/part-*"
    c = cfg(path="data/shards/*.tfrecord", features=FEATURES, stream={"hash_key": "id"})
    assert c.data.path == Path("data/shards/*.tfrecord")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"stream": {"hash_key": "id"}}, "needs data.features"),
        ({"features": FEATURES, "stream": {}}, "exactly one of hash_key"),
        (
            {
                "features": FEATURES,
                "stream": {
                    "hash_key": "id",
                    "locations": {"train": "a", "validation": "b", "test": "c"},
                },
            },
            "exactly one of hash_key",
        ),
        (
            {"source": "csv", "features": FEATURES, "limit": 100, "stream": {"hash_key": "id"}},
            "data.limit",
        ),
        (
            {"source": "text_folder", "features": FEATURES, "stream": {"hash_key": "id"}},
            "tfrecord, csv or parquet shards or an image_folder",
        ),
    ],
)
def test_a_stream_config_that_cannot_work_is_refused_saying_why(data, fragment):
    with pytest.raises(ValidationError, match=fragment):
        cfg(**data)


def test_without_a_stream_block_the_data_section_is_unchanged():
    c = PipelineConfig.model_validate({"data": {"source": "csv", "path": "x.csv"}})
    assert c.data.stream is None and c.data.path == Path("x.csv")


def test_an_object_store_location_without_a_stream_block_is_refused_when_the_data_loads():
    from tfship.data import load_splits
    from tfship.errors import DataError

    with pytest.raises(DataError, match="in-memory loaders read local files") as info:
        load_splits(cfg(features=FEATURES))
    assert "data.stream" in str(info.value.hint)


def test_the_in_memory_loaders_refuse_a_stream_config_clearly():
    # `tfship data snapshot` / `changed` list a stream instead
    # (tests/integration/test_stream_changed.py); the in-memory loaders never read one.
    from tfship.data.files import require_path
    from tfship.errors import DataError

    with pytest.raises(DataError, match=r"in-memory loaders read only local files"):
        require_path(cfg(features=FEATURES, stream={"hash_key": "id"}).data)
