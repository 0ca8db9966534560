"""The idempotent Kafka sink: after a resume, decisions written since the snapshot are not written again,
and a transaction id already decided for other content goes to the dead letters instead."""

from __future__ import annotations

import msgspec

from flows.idempotent_sink import IdempotentKafkaSink
from flows.kafka_io import partition_name
from streamguard.core.topics import ensure_topics, read_all


def _decision(tid: int, amount: float) -> bytes:
    return msgspec.json.encode(
        {
            "transaction_id": tid,
            "ts": "2026-03-01T10:00:00Z",
            "customer_id": "C1",
            "terminal_id": "T1",
            "amount": amount,
        }
    )


def _message(
    tid: int, amount: float = 1.0, fingerprint: int | None = None, source: tuple[int, int] = (2, 40)
):
    return (str(tid), fingerprint if fingerprint is not None else int(amount * 100), 1_772_359_200_000_000,
            _decision(tid, amount), *source)  # fmt: skip


def test_resume_skips_decisions_written_after_the_snapshot_and_writes_the_rest(sg_settings):
    ensure_topics(sg_settings, ["decisions", "dead_letters"])
    topic = sg_settings.topic("decisions")
    sink = IdempotentKafkaSink(sg_settings, topic)
    assert sink.list_parts() == [partition_name(p) for p in range(sg_settings.topic_partitions)]
    assert sink.part_fn(partition_name(3)) == 3

    first = sink.build_part("write", partition_name(1), None)
    first.write_batch([[_message(1), _message(2)]])
    snapshot = first.snapshot()
    assert snapshot["next_offset"] == 2
    first.write_batch([[_message(3), _message(4)]])  # written after the snapshot, then the process "dies"
    first.close()

    resumed = sink.build_part("write", partition_name(1), snapshot)
    # Bytewax replays the epoch after the snapshot: 3 and 4 come again (recomputed: same content), then 5.
    resumed.write_batch([[_message(3), _message(4), _message(5)]])
    assert resumed.snapshot()["next_offset"] == 5

    records = [r for r in read_all(sg_settings, topic) if r.partition == 1]
    assert [r.key for r in records] == [b"1", b"2", b"3", b"4", b"5"]


def test_an_id_decided_for_other_content_is_dead_lettered_not_decided_twice(sg_settings):
    ensure_topics(sg_settings, ["decisions", "dead_letters"])
    topic = sg_settings.topic("decisions")
    writer = IdempotentKafkaSink(sg_settings, topic).build_part("write", partition_name(0), None)
    writer.write_batch([[_message(7, 1.0), _message(7, 2.5, source=(3, 99)), _message(7, 1.0)]])
    writer.snapshot()
    assert [r.key for r in read_all(sg_settings, topic) if r.partition == 0] == [b"7"]
    (letter,) = read_all(sg_settings, sg_settings.topic("dead_letters"))
    got = msgspec.json.decode(letter.value)
    assert "duplicate transaction_id 7 with different content" in got["error"]
    # It points at the refused transaction itself, where its bytes can still be read.
    assert (got["topic"], got["partition"], got["offset"]) == (sg_settings.topic("transactions"), 3, 99)


def test_a_writer_without_a_snapshot_skips_what_its_partition_received_within_the_dedupe_window(sg_settings):
    """A crash before the first snapshot, or a reset recovery store: the replayed decisions are not rewritten."""
    ensure_topics(sg_settings, ["decisions", "dead_letters"])
    topic = sg_settings.topic("decisions")
    sink = IdempotentKafkaSink(sg_settings, topic)
    first = sink.build_part("write", partition_name(2), None)
    first.write_batch([[_message(1), _message(2), _message(3)]])
    first.close()  # delivered, never snapshotted
    again = sink.build_part("write", partition_name(2), None)
    again.write_batch([[_message(1), _message(2), _message(3), _message(4)]])
    assert again.snapshot()["next_offset"] == 4
    again.close()
    assert [r.key for r in read_all(sg_settings, topic) if r.partition == 2] == [b"1", b"2", b"3", b"4"]
    # Outside the window (a zero-second one), a writer starts without memory, as documented.
    narrow = IdempotentKafkaSink(sg_settings.model_copy(update={"dedupe_window_s": 0.0}), topic)
    fresh = narrow.build_part("write", partition_name(2), None)
    fresh.write_batch([[_message(4)]])
    fresh.close()
    keys = [r.key for r in read_all(sg_settings, topic) if r.partition == 2]
    assert keys == [b"1", b"2", b"3", b"4", b"4"]


def test_a_fresh_partition_snapshots_its_current_end(sg_settings):
    ensure_topics(sg_settings, ["decisions"])
    sink = IdempotentKafkaSink(sg_settings, sg_settings.topic("decisions"))
    assert sink.build_part("write", partition_name(0), None).snapshot()["next_offset"] == 0
