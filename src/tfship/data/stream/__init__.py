"""Streaming data at scale: sharded files on local disk, gs:// or s3://, read with tf.data.

Used by the stages when pipeline.yaml has a `data.stream` block (tfship.data.streamed;
docs/data-at-scale.md); without one the in-memory path (tfship.data) is used. Modules:

- `locations`: parse a location, list its shards (path, size, checksum, version)
- `staging`: S3 shards downloaded ahead of the reader into a byte-bounded local cache
- `readers`: TFRecord / CSV / Parquet shards parsed, image folders decoded, in the graph
- `pipeline`: `StreamSource` + `StreamOptions` -> the tf.data pipeline; bad-input policy
- `split`: explicit split locations, or a stable hash split on a key feature
- `sharding`: FILE vs DATA auto-shard decision for tf.distribute input pipelines
- `stats`, `profile`, `drift`: one bounded sample pass -> fingerprint + statistics; comparison
"""

from tfship.data.stream.drift import DriftBounds, StatsComparison, compare_statistics
from tfship.data.stream.locations import Location, Shard, list_location, parse_location
from tfship.data.stream.pipeline import StreamOptions, StreamSource
from tfship.data.stream.profile import (
    Profile,
    diff_listings,
    fingerprint,
    listing_digest,
    profile,
)
from tfship.data.stream.readers import LabelSpec, example_spec
from tfship.data.stream.sharding import ShardDecision, decide
from tfship.data.stream.split import HashSplit, SplitLocations
from tfship.data.stream.staging import Stager
from tfship.data.stream.stats import StatsAccumulator

__all__ = [
    "DriftBounds",
    "HashSplit",
    "LabelSpec",
    "Location",
    "Profile",
    "Shard",
    "ShardDecision",
    "SplitLocations",
    "Stager",
    "StatsAccumulator",
    "StatsComparison",
    "StreamOptions",
    "StreamSource",
    "compare_statistics",
    "decide",
    "diff_listings",
    "example_spec",
    "fingerprint",
    "list_location",
    "listing_digest",
    "parse_location",
    "profile",
]
