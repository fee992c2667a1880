"""Streaming input throughput: tfship.data.stream vs a hand-written tf.data pipeline.

Generates TFRecord shards (default 200 MB in 64 files, ~1 KB per tf.train.Example), then,
with no model, counts examples/s over one full epoch of:

- plain: `list_files(shuffle, seed)` + `interleave(TFRecordDataset, cycle_length,
  AUTOTUNE, deterministic)` + `batch` + `map(parse_example)` + `prefetch` — what a TF engineer
  writes by hand (target: tfship >= 0.9 x plain);
- tfship local: `StreamSource.open(dir, schema).dataset(batch)` on the same shards;
- tfship S3: the same shards in moto_server on 127.0.0.1, staged to local disk by the bounded
  cache (moto is a single-threaded Python server: this measures the staging machinery against
  a slow store, not S3's throughput);
- statistics + fingerprint: one `profile()` pass (its bounded content sample), as % of one
  local epoch's read time (target <= 10 %).

Rounds alternate plain / tfship so a busy machine hurts both alike; figures are medians.

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/stream_input.py [--mb 200] [--files 64]
        [--rounds 3] [--s3-mb 64] [--no-s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.helpers (run as a script from anywhere)

from tests.helpers import stream_shards as ss  # noqa: E402
from tests.helpers.moto import AWS_TEST_ENV, moto_server  # noqa: E402

BATCH = 256
CYCLE = 16
PAD = 900  # bytes of text per example: ~1 KB records


def generate(folder: Path, mb: int, files: int) -> int:
    per_file = max(1, (mb << 20) // files // 1030)
    ss.write_tfrecords(folder, files, per_file, pad=PAD)
    return files * per_file


def plain_dataset(folder: Path):
    import tensorflow as tf

    spec = {
        "id": tf.io.FixedLenFeature([], tf.int64, -1),
        "x": tf.io.FixedLenFeature([], tf.float32, float("nan")),
        "v": tf.io.FixedLenFeature([3], tf.float32, [float("nan")] * 3),
        "color": tf.io.FixedLenFeature([], tf.string, ""),
        "note": tf.io.FixedLenFeature([], tf.string, ""),
        "y": tf.io.FixedLenFeature([], tf.int64, -1),
    }

    def parse(raw):
        x = tf.io.parse_example(raw, spec)
        return x, x.pop("y")

    files = tf.data.Dataset.list_files(str(folder / "*.tfrecord"), shuffle=True, seed=0)
    ds = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=CYCLE,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return (
        ds.batch(BATCH).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    )


def count(ds, cpu: list[float] | None = None) -> tuple[int, float]:
    """(examples, wall seconds) of one pass; appends the process's CPU seconds to `cpu`."""
    c0 = sum(os.times()[:2])
    t0 = time.perf_counter()
    n = 0
    for _, y in ds:
        n += int(y.shape[0])
    if cpu is not None:
        cpu.append(sum(os.times()[:2]) - c0)
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--s3-mb", type=int, default=64, help="MB uploaded to moto (0: skip S3)")
    ap.add_argument("--sample-records", type=int, default=4096, help="profile()'s default")
    ap.add_argument("--dir", type=Path, default=None, help="keep the shards here")
    args = ap.parse_args()

    from tfship.data.stream import StreamOptions, StreamSource, profile

    with contextlib.ExitStack() as stack:
        base = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder = base / "shards"
        t0 = time.perf_counter()
        if not folder.exists():
            generate(folder, args.mb, args.files)
        total = sum(p.stat().st_size for p in folder.glob("*.tfrecord"))
        print(
            f"shards: {len(list(folder.glob('*.tfrecord')))} files, {total / 2**20:.0f} MiB "
            f"(generated in {time.perf_counter() - t0:.1f} s); batch {BATCH}, cycle {CYCLE}; "
            f"{os.cpu_count()} CPUs visible"
        )
        schema = ss.schema()
        src = StreamSource.open(str(folder), schema, StreamOptions(cycle_length=CYCLE))
        count(plain_dataset(folder).take(20))  # warm: page cache, tracing
        count(src.dataset(BATCH).take(20))
        plain, ours, ratios, cpu_ratios, epoch_s = [], [], [], [], []
        for r in range(args.rounds):
            order = ("plain", "tfship") if r % 2 == 0 else ("tfship", "plain")
            got, cpu = {}, {}
            for which in order:
                ds = plain_dataset(folder) if which == "plain" else src.dataset(BATCH)
                spent: list[float] = []
                n, s = count(ds, spent)
                got[which] = n / s
                cpu[which] = n / spent[0]
                if which == "tfship":
                    epoch_s.append(s)
            plain.append(got["plain"])
            ours.append(got["tfship"])
            ratios.append(got["tfship"] / got["plain"])
            cpu_ratios.append(cpu["tfship"] / cpu["plain"])
            print(
                f"  round {r + 1}: plain {got['plain']:,.0f} ex/s, tfship {got['tfship']:,.0f} "
                f"ex/s, ratio {ratios[-1]:.3f} (per CPU-second: {cpu_ratios[-1]:.3f})"
            )
        print(
            f"local: plain {statistics.median(plain):,.0f} ex/s, tfship "
            f"{statistics.median(ours):,.0f} ex/s, ratio {statistics.median(ratios):.3f} "
            f"(target >= 0.9); examples per CPU-second ratio {statistics.median(cpu_ratios):.3f}"
        )

        prof_s = []
        for _ in range(args.rounds):
            p = profile(src, sample_records=args.sample_records)
            prof_s.append(p.seconds)
        epoch = statistics.median(epoch_s)
        print(
            f"statistics + fingerprint: {statistics.median(prof_s):.3f} s for "
            f"{p.records} sampled records of {len(p.sampled)} files; one epoch read "
            f"{epoch:.3f} s; overhead {100 * statistics.median(prof_s) / epoch:.1f} % "
            "(target <= 10 %; the sample is fixed, so the share falls as the data grows)"
        )

        if args.s3_mb > 0:
            s3_bench(folder, args, schema)


def s3_bench(folder: Path, args: argparse.Namespace, schema) -> None:
    import boto3

    from tfship.data.stream import StreamOptions, StreamSource

    os.environ.update(AWS_TEST_ENV)
    files = sorted(folder.glob("*.tfrecord"))
    size = max(p.stat().st_size for p in files)
    files = files[: max(1, (args.s3_mb << 20) // size)]
    with moto_server() as moto, tempfile.TemporaryDirectory() as cache:
        s3 = boto3.client("s3", endpoint_url=moto.url)
        s3.create_bucket(Bucket="bench")
        t0 = time.perf_counter()
        for p in files:
            s3.upload_file(str(p), "bench", f"shards/{p.name}")
        up = time.perf_counter() - t0
        mb = sum(p.stat().st_size for p in files) / 2**20
        cycle = 4  # a cache of 3 x 4 + 2 = 14 shards, below the data uploaded: eviction matters
        bound = (3 * cycle + 2) * size
        opts = StreamOptions(
            cycle_length=cycle,
            s3_endpoint_url=moto.url,
            stage_dir=Path(cache),
            stage_max_bytes=bound,
            stage_workers=8,
        )
        src = StreamSource.open("s3://bench/shards/", schema, opts)
        n, s = count(src.dataset(BATCH))
        st = src.stager.stats
        local = StreamSource.open(str(folder), schema, StreamOptions(cycle_length=cycle))
        local.shards = local.shards[: len(files)]  # the same shards, from local disk
        local_n, local_s = count(local.dataset(BATCH))
        print(
            f"S3 via moto: {len(files)} files, {mb:.0f} MiB (upload {up:.1f} s); tfship "
            f"{n / s:,.0f} ex/s ({mb / s:.1f} MiB/s, cycle_length {cycle}), cache bound "
            f"{bound / 2**20:.0f} MiB, peak "
            f"{st.peak_bytes / 2**20:.0f} MiB, {st.evicted_files} evicted, reader waited "
            f"{st.wait_seconds:.2f} s of {s:.2f} s, {st.over_bound} over bound; same shards "
            f"local {local_n / local_s:,.0f} "
            f"ex/s (ratio S3/local {(n / s) / (local_n / local_s):.3f})"
        )
        src.close()


if __name__ == "__main__":
    main()
