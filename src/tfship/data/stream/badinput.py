"""Bad input in the streaming pipeline: skip-and-count, and errors that name the shard.

Mixed into `StreamSource` (tfship.data.stream.pipeline); see its module doc for the policies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tfship.data.stream import readers
from tfship.errors import DataError


class BadInput:
    """`on_error: skip` counters and `explain` / `named_errors` for `fail`."""

    # provided by StreamSource
    _counters: Any
    options: Any
    location: str
    shards: Any
    format: str
    schema: Any
    label: Any

    def _streamed_raw(self) -> Any:
        raise NotImplementedError

    def raw_fn(self) -> Any:
        raise NotImplementedError

    def parse_fn(self) -> Any:
        raise NotImplementedError

    def local_copy(self, shard: Any) -> str:
        raise NotImplementedError

    stager: Any

    # --- bad records ------------------------------------------------------------------------

    def _vars(self) -> Any:
        import tensorflow as tf

        if self._counters is None:
            with tf.init_scope():
                self._counters = (
                    tf.Variable(0, dtype=tf.int64, trainable=False, name="stream_seen"),
                    tf.Variable(0, dtype=tf.int64, trainable=False, name="stream_good"),
                )
        return self._counters

    def _per_file_skip(self) -> Any:
        import tensorflow as tf

        seen, good = self._vars()
        raw = self._streamed_raw()
        parse = self.parse_fn()

        def count_seen(r: Any) -> Any:
            seen.assign_add(1)
            return r

        def parse_one(r: Any) -> Any:
            x, y = parse(tf.expand_dims(r, 0))
            return {k: v[0] for k, v in x.items()}, y[0]

        def count_good(x: Any, y: Any) -> Any:
            good.assign_add(1)
            return x, y

        def per_file(path: Any) -> Any:
            return raw(path).map(count_seen).map(parse_one).ignore_errors().map(count_good)

        return per_file

    def _check_skipped(self, x: Any, y: Any) -> Any:
        import tensorflow as tf

        seen, good = self._vars()
        bad = seen.read_value() - good.read_value()
        # In-flight records make `bad` an over-estimate by at most the interleave's buffers;
        # check_skipped() after the epoch is exact.
        slack = self.options.cycle_length * 4
        tf.debugging.assert_less_equal(
            bad,
            tf.constant(self.options.max_bad_records + slack, tf.int64),
            message=f"more than {self.options.max_bad_records} bad records skipped in "
            f"{self.location} (on_error: skip, max_bad_records)",
        )
        return x, y

    def skipped(self) -> int:
        if self._counters is None:
            return 0
        seen, good = self._counters
        return int(seen.numpy() - good.numpy())

    def check_skipped(self) -> int:
        n = self.skipped()
        if n > self.options.max_bad_records:
            raise DataError(
                f"{self.location}: {n} record(s) did not parse and were skipped; at most "
                f"{self.options.max_bad_records} allowed (max_bad_records)",
                hint="fix the shards, or raise max_bad_records",
            )
        return n

    # --- naming the bad shard ---------------------------------------------------------------

    def explain(self, exc: BaseException) -> DataError:
        """DataError naming the first shard that fails to read or parse (re-reads on failure)."""
        import tensorflow as tf

        for shard in self.shards:
            local = self.local_copy(shard)
            try:
                if self.format == "parquet":
                    for _ in readers.parquet_batches(local, self.schema, self.label, 1024):
                        pass
                    continue
                ds = self.raw_fn()(local).batch(1024)
                parse = self.parse_fn()
                for i, raw in enumerate(ds):
                    try:
                        parse(raw)
                    except tf.errors.InvalidArgumentError as err:
                        return self.unparsable(shard, i * 1024, i * 1024 + len(raw) - 1, err)
            except tf.errors.DataLossError as err:
                return DataError(
                    f"shard {shard.path} is corrupt ({_short(err)})",
                    hint="rewrite or remove the shard (GZIP shards need compression GZIP / a "
                    ".gz suffix); or set on_error: skip",
                )
            except tf.errors.OpError as err:
                return DataError(f"shard {shard.path} cannot be read ({_short(err)})")
            except DataError as err:
                return err
            finally:
                if getattr(self, "stager", None) is not None:
                    self.stager.discard(local)  # S3: one diagnosed shard on disk at a time
        return DataError(f"{self.location}: reading failed ({_short(exc)})")

    def unparsable(self, shard: Any, first: int, last: int, err: BaseException) -> DataError:
        """`explain`'s error for records `first`..`last` of `shard` that do not parse."""
        return DataError(
            f"shard {shard.path}: records {first}-{last} do not parse against the schema "
            f"({_short(err)})",
            hint="fix the shard or data.features; or set on_error: skip with max_bad_records",
        )

    @contextlib.contextmanager
    def named_errors(self) -> Iterator[None]:
        import tensorflow as tf

        try:
            yield
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            if "bad records skipped" in str(exc):
                raise DataError(
                    f"{self.location}: more than {self.options.max_bad_records} bad record(s) "
                    "skipped (on_error: skip, max_bad_records)"
                ) from None
            raise self.explain(exc) from None


def _short(err: BaseException) -> str:
    msg = getattr(err, "message", str(err))
    # Drop TF's "{{function_node ...}}" prefix.
    if msg.startswith("{{function_node"):
        msg = msg.split("}}", 1)[-1].strip()
    return msg.split(" [Op:")[0][:300]
