"""The run directory's metrics, written in batches: the same lines and scalars as one by one."""

import json

import numpy as np
import tensorflow as tf

from pg_keras.run_dir import MetricsLog
from run_files import tensorboard_events


def records(count, seed=0):
    """Records like the loop's: some updates end episodes (more keys), some do not."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        record = {"loss": float(rng.normal()), "skipped": 0.0, "env_steps": 128 * (i + 1),
                  "wall_seconds": 0.01 * i, "episodes": int(rng.integers(0, 2))}
        if record["episodes"]:
            record.update(return_mean=float(rng.normal() * 1e6), length_mean=1.0 / 3.0)
        out.append(record)
    return out


def test_batched_writes_equal_one_eager_write_per_record(tmp_path):
    written = records(40)
    reference = tf.summary.create_file_writer(str(tmp_path / "reference"))
    for record in written:  # the scalars as one eager tf.summary.scalar call each
        with reference.as_default(step=int(record["env_steps"])):
            for key, value in record.items():
                if key != "env_steps":
                    tf.summary.scalar(f"train/{key}", value)
    reference.close()
    writer = tf.summary.create_file_writer(str(tmp_path / "batched"))
    log = MetricsLog(str(tmp_path / "metrics.jsonl"), writer, flush_seconds=1e9)
    for i, record in enumerate(written):
        log.add(record)
        if i in (6, 7, 23):  # flushes of one record, of several, and of different keys
            log.flush()
    log.close()
    writer.close()
    expected = tensorboard_events(tmp_path / "reference")
    assert len(expected) == sum(len(r) - 1 for r in written)
    assert tensorboard_events(tmp_path / "batched") == expected
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line) for line in f] == written


def test_records_wait_in_memory_until_a_flush_their_age_or_their_number(tmp_path):
    now = [0.0]
    writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(str(path), writer, flush_seconds=2.0, max_records=5,
                     clock=lambda: now[0])

    def lines():
        return len(path.read_text().splitlines()) if path.exists() else 0

    written = records(12)
    for record in written[:3]:
        log.add(record)
        now[0] += 0.5
    assert lines() == 0  # 1.5 s old: kept
    now[0] += 0.5
    log.add(written[3])  # 2 s since the last flush
    assert lines() == 4
    for record in written[4:9]:
        log.add(record)
    assert lines() == 9  # five waiting, however young
    log.add(written[9])
    log.flush()
    log.flush()  # nothing waiting: nothing written twice
    log.close()
    writer.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == written[:10]
    assert [e[0] for e in tensorboard_events(tmp_path / "tb") if e[1] == "train/loss"] == [
        r["env_steps"] for r in written[:10]]
