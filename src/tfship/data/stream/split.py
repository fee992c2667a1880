"""Splits without loading everything: explicit split locations, or a hash of a key feature.

Explicit: `SplitLocations(train="gs://b/train-*", validation="gs://b/val-*", test=...)`; each
split is its own location (listing, fingerprint, statistics).

Hash split: every example goes to the split its key's bucket falls in. The bucket is
`tf.strings.to_hash_bucket_fast(key, buckets)`, i.e. FarmHash Fingerprint64 of the key's UTF-8
bytes modulo `buckets` — the function TF documents as stable across platforms and releases (it
is the same as `tf.fingerprint` / farmhash::Fingerprint64; a golden test pins known values).
An int64 key is hashed as its decimal text. Buckets [0, train) are train, [train, train+val)
validation, the rest test, with train = round(buckets * train_fraction). The same example
always lands in the same split on every run and machine, whatever the shard order or sharding,
and adding examples never moves existing ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfship.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitLocations:
    train: str
    validation: str | None = None
    test: str | None = None

    def location(self, split: str) -> str:
        loc = getattr(self, split, None) if split in SPLITS else None
        if loc is None:
            raise DataError(f"no location for the {split!r} split")
        return loc


@dataclass(frozen=True)
class HashSplit:
    key: str
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    buckets: int = 10_000
    key_dtype: str | None = None  # "int64" | "string"; None: the key feature's, else string

    def __post_init__(self) -> None:
        if not (0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1):
            raise DataError("split fractions must be in [0, 1)")
        if self.validation_fraction + self.test_fraction >= 1:
            raise DataError("validation_fraction + test_fraction must be < 1")
        if self.buckets < 2:
            raise DataError("hash split needs at least 2 buckets")

    def ranges(self) -> dict[str, tuple[int, int]]:
        n = self.buckets
        train = round(n * (1 - self.validation_fraction - self.test_fraction))
        val = round(n * self.validation_fraction)
        return {"train": (0, train), "validation": (train, train + val), "test": (train + val, n)}

    def bucket(self, keys: Any) -> Any:
        """Bucket of each key (a tensor of strings or int64)."""
        import tensorflow as tf

        keys = tf.convert_to_tensor(keys)
        if keys.dtype != tf.string:
            keys = tf.strings.as_string(keys)
        return tf.strings.to_hash_bucket_fast(keys, self.buckets)

    def mask(self, keys: Any, split: str) -> Any:
        """Boolean mask: which of `keys` belong to `split`."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        lo, hi = self.ranges()[split]
        b = self.bucket(keys)
        return (b >= lo) & (b < hi)
