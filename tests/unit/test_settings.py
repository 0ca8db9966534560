"""Settings: env prefix, clear errors naming the variable, secrets never shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamguard.cli import main
from streamguard.core.settings import Settings


def test_env_variables_with_the_prefix_configure_settings(monkeypatch):
    monkeypatch.setenv("STREAMGUARD_TOPIC_PREFIX", "dev_")
    monkeypatch.setenv("STREAMGUARD_KAFKA_BOOTSTRAP", "k1:9092, k2:9092")
    s = Settings(_env_file=None)
    assert s.topic("decisions") == "dev_decisions"
    assert s.brokers == ["k1:9092", "k2:9092"]
    assert not s.uses_local_kafka and s.uses_local_sql


def test_secrets_never_appear_in_repr_or_redacted_dump():
    s = Settings(
        _env_file=None,
        sql_url="postgresql://u:hunter2@db/x",
        kafka_sasl_password="hunter3",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
    )
    for text in (repr(s), str(s), str(s.redacted())):
        assert "hunter2" not in text and "hunter3" not in text
    assert s.sql_dsn().endswith("hunter2@db/x")
    assert s.kafka_config()["sasl.password"] == "hunter3"


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        Settings(_env_file=None).topic_prefix = "x"


def test_a_bad_value_is_reported_with_the_variable_name(monkeypatch, capsys):
    monkeypatch.setenv("STREAMGUARD_LOCAL_KAFKA_PORT", "not-a-port")
    assert main(["status"]) == 2
    assert "STREAMGUARD_LOCAL_KAFKA_PORT" in capsys.readouterr().err


def test_thresholds_must_be_ordered():
    with pytest.raises(ValidationError, match="STREAMGUARD_DECLINE_THRESHOLD"):
        Settings(_env_file=None, review_threshold=0.8, decline_threshold=0.5)


def test_the_partition_stall_bound_must_not_be_below_the_idle_time():
    with pytest.raises(
        ValidationError, match="STREAMGUARD_PARTITION_STALL_S must be >= STREAMGUARD_PARTITION_IDLE_S"
    ):
        Settings(_env_file=None, partition_idle_s=5, partition_stall_s=3)


def test_unknown_topic_names_are_refused():
    with pytest.raises(ValueError, match="unknown topic"):
        Settings(_env_file=None).topic("decision")


def test_every_verb_has_help(capsys):
    verbs = [
        ["up"],
        ["down"],
        ["status"],
        ["simulate"],
        ["replay"],
        ["sql", "apply"],
        ["sql", "shell"],
        ["train"],
        ["decisions"],
        ["flow", "run"],
        ["models", "list"],
        ["models", "rollback"],
        ["models", "promote"],
        ["demo"],
    ]
    for verb in verbs:
        with pytest.raises(SystemExit) as exit_:
            main([*verb, "--help"])
        assert exit_.value.code == 0
        assert "usage: streamguard" in capsys.readouterr().out


def test_env_example_lists_every_setting_and_parses(tmp_path):
    from pathlib import Path

    from streamguard.core.env_example import render

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert text == render(), "regenerate: python -m streamguard.core.env_example > .env.example"
    env = tmp_path / ".env"
    env.write_text(text)
    assert Settings(_env_file=env) == Settings(_env_file=None)


def test_metrics_ports_are_shared_out_to_processes_of_one_host_and_a_taken_port_is_left_alone(monkeypatch):
    import socket

    from flows.metrics import serve_metrics

    names = ("BYTEWAX_DATAFLOW_API_PORT", "BYTEWAX_DATAFLOW_API_ENABLED", "BYTEWAX_DATAFLOW_API_CACHE_PATH")
    for name in (*names, "BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES"):
        monkeypatch.setenv(name, "")  # recorded, so what serve_metrics sets is undone after the test
        monkeypatch.delenv(name)
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        taken = held.getsockname()[1]
        assert serve_metrics(taken, "/tmp", argv=["flows.fraud:flow"]) is None
        assert "BYTEWAX_DATAFLOW_API_ENABLED" not in __import__("os").environ
        local = ["flows.fraud:flow", "-i", "1", "-a", "127.0.0.1:2101;127.0.0.1:2102"]
        assert serve_metrics(taken - 1, "/tmp", argv=local) is None  # taken - 1 + process 1 = taken
    monkeypatch.delenv("BYTEWAX_DATAFLOW_API_PORT", raising=False)
    spread = ["flows.fraud:flow", "-i", "1", "-a", "pod-0.svc:2101;pod-1.svc:2101"]
    assert serve_metrics(taken, "/tmp", argv=spread) == taken  # one process per host: the same port
    monkeypatch.setenv("BYTEWAX_DATAFLOW_API_PORT", "4321")
    assert serve_metrics(9999, "/tmp") == 4321  # the caller's choice wins


def test_kafka_clients_pace_one_partition_fetches_and_resend_lost_requests_on_the_embedded_broker_only():
    local = Settings(_env_file=None)
    assert local.kafka_consumer_tuning() == {
        "fetch.wait.max.ms": "20",
        "queued.min.messages": "1",
        "fetch.queue.backoff.ms": "20",
    }
    # A consumer of several partitions is not paced: its partitions would fall out of step.
    assert local.kafka_consumer_tuning(partitions=4) == {"fetch.wait.max.ms": "20"}
    assert local.kafka_mirror_consumer_tuning()["fetch.queue.backoff.ms"] == "300"
    assert local.kafka_config()["socket.timeout.ms"] == "10000"
    remote = Settings(_env_file=None, kafka_bootstrap="kafka-0:9092")
    assert remote.kafka_consumer_tuning() == {"fetch.wait.max.ms": "100"}
    assert remote.kafka_mirror_consumer_tuning() == {"fetch.wait.max.ms": "300"}
    assert "socket.timeout.ms" not in remote.kafka_config()  # librdkafka's default on a real Kafka


def test_producers_batch_longer_on_the_embedded_broker_unless_told():
    assert Settings(_env_file=None).kafka_producer_tuning() == {"linger.ms": "20"}
    assert Settings(_env_file=None, kafka_bootstrap="kafka-0:9092").kafka_producer_tuning() == {
        "linger.ms": "5"
    }
    assert Settings(_env_file=None, kafka_linger_ms=0.5).kafka_producer_tuning() == {"linger.ms": "0.5"}
