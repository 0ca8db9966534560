"""Topic helpers against the real broker: partition counts and reading a topic back to its end."""

from __future__ import annotations

from confluent_kafka import Producer

from streamguard.core.topics import ensure_topics, partition_count, read_all


def test_partition_count_and_read_all_see_every_record_of_every_partition(sg_settings):
    ensure_topics(sg_settings)
    topic = sg_settings.topic("transactions")
    parts = partition_count(sg_settings, topic)
    assert parts == sg_settings.topic_partitions
    producer = Producer(sg_settings.kafka_config())
    for i in range(7):
        producer.produce(topic, value=b"x%d" % i, partition=1)
        producer.flush(10)  # one record batch each: reading must go past Tansu's reported end offsets
    producer.produce(topic, value=b"y", partition=3)
    producer.flush(10)
    read = read_all(sg_settings, topic)
    assert sorted((r.partition, r.value) for r in read) == [(1, b"x%d" % i) for i in range(7)] + [(3, b"y")]


def test_a_missing_topic_has_no_partition_count(sg_settings):
    assert partition_count(sg_settings, sg_settings.topic_prefix + "no_such_topic", timeout_s=2.0) is None
