"""Topic helpers against the real broker: what the flow's event-time order asks it about partitions."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer

from streamguard.topics import EndOffsets, ensure_topics, partition_count, read_all


def test_end_offsets_tell_a_partition_read_to_its_end_from_one_with_records_waiting(sg_settings):
    ensure_topics(sg_settings)
    topic = sg_settings.topic("transactions")
    ends = EndOffsets(sg_settings, topic)
    parts = partition_count(sg_settings, topic)
    assert parts and ends() == {p: (0, 0) for p in range(parts)}
    producer = Producer(sg_settings.kafka_config())
    for i in range(7):
        producer.produce(topic, value=b"x%d" % i, partition=1)
        producer.flush(10)  # one record batch each: a broker's end offset follows every one of them
    producer.produce(topic, value=b"y", partition=3)
    producer.flush(10)
    got = ends()
    assert got[1] == (0, 7) and got[3] == (0, 1) and got[0] == got[2] == (0, 0)
    # The end is the offset after the last record, exactly what a consumer that read everything has seen.
    read = read_all(sg_settings, topic)
    assert max(r.offset for r in read if r.partition == 1) + 1 == got[1][1]


def test_end_offsets_of_a_missing_topic_raise_a_kafka_error(sg_settings):
    missing = sg_settings.topic_prefix + "no_such_topic"
    with pytest.raises(KafkaException, match="no partition metadata for " + missing):
        EndOffsets(sg_settings, missing, timeout_s=2.0)()
