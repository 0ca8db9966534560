"""The idempotent Kafka sink: after a resume, keys written since the snapshot are not written again."""

from __future__ import annotations

from flows.idempotent_sink import IdempotentKafkaSink
from streamguard.topics import ensure_topics, read_all


def test_resume_skips_keys_written_after_the_snapshot_and_writes_the_rest(sg_settings):
    ensure_topics(sg_settings, ["decisions"])
    topic = sg_settings.topic("decisions")
    sink = IdempotentKafkaSink(sg_settings, topic)
    assert sink.list_parts() == [str(p) for p in range(sg_settings.topic_partitions)]

    first = sink.build_part("write", "1", None)
    first.write_batch([("a", b"1"), ("b", b"2")])
    snapshot = first.snapshot()
    assert snapshot == 2
    first.write_batch([("c", b"3"), ("d", b"4")])  # written after the snapshot, then the process "dies"

    resumed = sink.build_part("write", "1", snapshot)
    # Bytewax replays the epoch after the snapshot: c and d come again, then new keys.
    resumed.write_batch([("c", b"3"), ("d", b"4"), ("e", b"5")])
    assert resumed.snapshot() == 5

    records = [r for r in read_all(sg_settings, topic) if r.partition == 1]
    assert [r.key for r in records] == [b"a", b"b", b"c", b"d", b"e"]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]


def test_a_fresh_partition_snapshots_its_current_end(sg_settings):
    ensure_topics(sg_settings, ["decisions"])
    sink = IdempotentKafkaSink(sg_settings, sg_settings.topic("decisions"))
    assert sink.build_part("write", "0", None).snapshot() == 0
