"""One frozen settings object for every streamguard process, read from `STREAMGUARD_*` variables.

Settings are read once at the edge (the CLI, a flow module's `flow`) and passed down. Secrets are
`SecretStr`, so they never show in a repr or a log line; `kafka_config()` and `sql_dsn()` are the only
places that reveal them, for the client libraries that need the plain value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOPIC_NAMES = ("transactions", "labels", "decisions", "alerts", "dead_letters", "late")
"""Logical topic names; the physical name is `topic_prefix + name`."""
Device = Literal["auto", "cpu", "gpu"]
DEVICES: tuple[str, ...] = get_args(Device)
"""Where models score and train: "cpu", "gpu" (CUDA or an error) or "auto" (CUDA when CuPy sees a device).
The one list: the scorer, `streamguard train --device` and STREAMGUARD_SCORER_DEVICE all use it."""


class Settings(BaseSettings):
    """Configuration of streamguard; each field is the variable `STREAMGUARD_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMGUARD_",
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="forbid",
        # An empty `STREAMGUARD_X=` (as in .env.example) means unset, not an empty string.
        env_ignore_empty=True,
        use_attribute_docstrings=True,
    )

    # -- where local state lives ----------------------------------------------------------------------
    state_dir: Path = Path(".streamguard")
    """Folder for the local stack's data, Bytewax recovery, replay checkpoints and the model registry."""
    model_dir: Path | None = None
    """Model registry folder; defaults to `<state_dir>/models`."""

    # -- Kafka ------------------------------------------------------------------------------------------
    kafka_bootstrap: str | None = None
    """`host:port[,host:port]` of a real Kafka; unset means the embedded local broker."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    local_kafka_port: int = Field(19092, ge=1, le=65535)
    """Port of the embedded broker (Tansu) on 127.0.0.1."""
    local_kafka_storage: Literal["memory", "disk"] = "memory"
    """Where the embedded broker keeps records: `memory` (fastest; topics vanish when it stops) or `disk`
    (a local object store under `<state_dir>/kafka/objects`: topics, records and consumer offsets survive a
    broker crash and `streamguard down`/`up`). Choose before the first `streamguard up`; switching
    needs a `streamguard down`."""
    topic_prefix: str = ""
    """Prefix for every topic name, so tests and tenants can share a broker."""
    topic_partitions: int = Field(4, ge=1)
    """Partitions for topics that streamguard creates. Keep it a multiple of the total Bytewax workers:
    Bytewax 0.21.1 can stall when workers hold uneven numbers of partitions (bytewax#556)."""
    kafka_batch_size: int = Field(1000, ge=1)
    """Most messages one Kafka read hands the flow."""
    kafka_fetch_wait_max_ms: int | None = Field(None, ge=0)
    """librdkafka's `fetch.wait.max.ms` for the flows' consumers; unset picks by broker: 20 for the
    embedded broker (Tansu answers a fetch only when this wait expires, so it is latency; but every fetch
    costs it CPU: at 5 ms the broker starved the flow on 2 cores and the flow fell behind at 1,000 tx/s,
    at 20 ms it kept up with p99 284 ms, `make bench-flow`), 100 for a real Kafka (it answers as soon as
    data arrives; lower values only add requests)."""
    kafka_mirror_fetch_wait_max_ms: int = Field(300, ge=0)
    """librdkafka's `fetch.wait.max.ms` for the mirror's consumers (one per topic partition). Its copy is on
    no decision's path (exact mode waits for the store only when a new day starts), and on the embedded
    broker every fetch costs broker CPU, more as partitions fill: 12 consumers at 5 ms made Tansu the
    busiest process at 1,000 tx/s; 300 instead of 100 ms took it from 47 / 39% to 37 / 36% of a core and
    event -> decision p99 at 1,000 tx/s (live mode) from 177 / 120 to 100 / 103 ms (2-core VM, two
    alternating pairs)."""
    kafka_linger_ms: float | None = Field(None, ge=0)
    """librdkafka's `linger.ms` for every producer streamguard runs (the flows' sinks, `streamguard replay`,
    the demo's live feed, the benchmarks' load generator); unset picks by broker: 20 for the embedded
    broker, 5 (librdkafka's default) for a real Kafka. The embedded broker's memory store lists every record
    batch a partition holds on each fetch that finds new data, so its CPU per fetch grows with the number
    of batches, not messages: at a steady 1,000 msg/s over 4 partitions it rose from 28% to 71% of a core
    in 40 s with 5 ms, from 10% to 28% with 20 ms. With the flows at 1,000 tx/s for 40 s (two alternating
    pairs, 2-core VM): 5 -> 20 ms for the flows' producers took Tansu from 90 / 102% to 77 / 70% of a core
    and event -> decision p99 from 234 / 236 to 174 / 170 ms, p50 unchanged; at 250 tx/s it cost 10 ms of
    p50 (77 -> 87 ms). 1 ms sent up to one request per message per partition and starved the flow."""

    # -- SQL store (Materialize in production, PostgreSQL 16 locally) ----------------------------------------
    sql_url: SecretStr | None = None
    """`postgresql://...` of Materialize or PostgreSQL; unset means the embedded local PostgreSQL."""
    local_pg_port: int = Field(15432, ge=1, le=65535)
    """Port of the embedded PostgreSQL on 127.0.0.1."""
    sql_schema: str = Field("streamguard", pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema holding streamguard's tables and views."""

    # -- features ---------------------------------------------------------------------------------------------
    label_delay_days: int = Field(7, ge=0)
    """Label-based features use windows that end this many days before the transaction's day."""
    label_maturity_days: int = Field(14, ge=0)
    """A transaction without a fraud label this many days before the latest label in the store is genuine;
    more recent ones are immature: training and evaluation leave them out (a fraud report may still come)."""
    allowed_lateness_s: float = Field(3600.0, gt=0)
    """A transaction older than the newest one read from its Kafka partition by more than this goes to the
    `late` topic (and into no feature state)."""
    max_future_s: float = Field(60.0, gt=0)
    """A transaction or label whose event time is more than this ahead of its Kafka timestamp (when it was
    sent) goes to `dead_letters` and moves no clock: one event cannot move time for all others. Keep it
    below the allowed lateness, so an accepted event can never make its partition's next events late."""
    feature_mode: Literal["exact", "live"] = "exact"
    """`exact`: features depend on the input only: per-terminal windows fold every partition's transactions
    in one event-time order, and label features wait for the store, so any replay gives the same features
    and scores. `live`: nothing waits past the decision budget: terminal windows fold in arrival order and
    a transaction whose label features are not ready by its deadline uses the newest ready ones (flagged
    `degraded_reason: "deadline"`)."""
    decision_budget_ms: float = Field(100.0, gt=0)
    """Live mode: the time from a transaction's Kafka timestamp to its decision. A transaction that cannot
    be decided within it is decided on the fast path (no waiting, no shadow score, no explanation) and
    flagged `degraded_reason: "deadline"`."""
    partition_idle_s: float = Field(2.0, gt=0)
    """A `transactions` partition whose reader found nothing new for this long, and whose records at the
    broker are all read, stops holding back the exact event-time order (else a quiet partition would stall
    scoring)."""
    partition_stall_s: float = Field(60.0, gt=0)
    """A `transactions` partition whose records wait at the broker but are not delivered holds back the
    event-time order for at most this long (then it counts as idle, with a warning)."""
    order_buffer_max_rows: int = Field(500_000, ge=1)
    """Exact mode: most transactions one worker holds while it waits for slower partitions. At the bound
    the oldest are released anyway, flagged `degraded_reason: "order_bound"` (counted), so memory stays
    bounded when a partition is slow."""
    dedupe_window_s: float = Field(86_400.0, ge=0)
    """How long (event time) a transaction id is remembered: an identical re-send within it is dropped
    and counted; the same id with other content goes to `dead_letters`."""
    feature_wait_timeout_s: float = Field(30.0, gt=0)
    """Exact mode: transactions wait for the SQL store to hold every label their features depend on, as long
    as it keeps ingesting; once it has ingested nothing for this long (down or stuck), they are scored with
    the newest label features it has, flagged `degraded_reason: "store"`."""
    store_idle_s: float = Field(2.0, ge=0)
    """A source partition the store has fully read, and that got nothing new for this long, stops
    holding back the store's freshness watermark (else a quiet partition would stall the flow)."""
    store_poll_ms: float = Field(50.0, gt=0)
    """How often each flow process asks the store for new label-feature changes and its progress while a
    worker waits on the store; with none waiting the wait doubles up to 1 s (a worker that finds a day
    not ready asks at once), which takes the idle polling off the flow, the store and the broker."""

    # -- scoring ----------------------------------------------------------------------------------------------
    scorer_device: Device = "auto"
    """`auto` uses CUDA when CuPy and a GPU are present, else the CPU."""
    scorer_threads: int = Field(1, ge=0)
    """XGBoost threads per CPU scoring call in the flow; 0 lets XGBoost use every core for big batches. One
    thread by default: the flow's own threads (a worker each, Kafka clients) keep the cores busy, and
    OpenMP's hand-offs between threads then cost more than they save (`make bench-scoring`)."""
    review_threshold: float = Field(0.5, ge=0, le=1)
    """Scores at or above this are sent to review (and to the alerts topic)."""
    decline_threshold: float = Field(0.9, ge=0, le=1)
    """Scores at or above this are declined."""
    score_batch_max_rows: int = Field(4096, ge=1)
    """Most transactions per XGBoost call; bigger releases are scored in several calls."""

    # -- observability --------------------------------------------------------------------------------------
    fraud_metrics_port: int = Field(3030, ge=0, le=65535)
    """Port of the scoring flow's Prometheus endpoint (`/metrics`: Bytewax's API, serving its metrics and
    streamguard's; 3030 is Bytewax's default); 0 turns it off. Processes on one host need a port each."""
    mirror_metrics_port: int = Field(3031, ge=0, le=65535)
    """Port of the mirror flow's Prometheus endpoint; 0 turns it off."""

    # -- flow processes -----------------------------------------------------------------------------------------
    gc_young_threshold: int = Field(10_000, ge=0)
    """Net allocations of tracked objects between the fraud flow's young garbage collections (Python's
    default is 700; 0 keeps it): fewer, longer young collections and almost no full ones, which paused it
    110-140 ms each. 10,000 rather than 50,000: each pause is a fifth as long (live at 1,000 tx/s one came
    every ~10 s and held every transaction read meanwhile), for 3-4% of backlog throughput. The mirror
    keeps Python's. Measured in `flows.gc_policy`."""

    # -- Bytewax recovery (used by `streamguard flow run`) ------------------------------------------------------
    recovery_partitions: int = Field(4, ge=1)
    """Recovery partitions created once; the most workers the flow will ever run with."""
    snapshot_interval_s: int = Field(5, ge=1)
    backup_interval_s: int = Field(30, ge=0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if self.decline_threshold < self.review_threshold:
            raise ValueError(
                "STREAMGUARD_DECLINE_THRESHOLD must be >= STREAMGUARD_REVIEW_THRESHOLD "
                f"(got {self.decline_threshold} < {self.review_threshold})"
            )
        if self.partition_stall_s < self.partition_idle_s:
            # A stall bound below the idle time would let a partition with unread records be overtaken.
            raise ValueError(
                "STREAMGUARD_PARTITION_STALL_S must be >= STREAMGUARD_PARTITION_IDLE_S "
                f"(got {self.partition_stall_s} < {self.partition_idle_s})"
            )
        if self.max_future_s >= self.allowed_lateness_s:
            # A future event moves its partition's clock by up to max_future_s: were that beyond the
            # lateness, one accepted event could make the next ordinary ones late.
            raise ValueError(
                "STREAMGUARD_MAX_FUTURE_S must be < STREAMGUARD_ALLOWED_LATENESS_S "
                f"(got {self.max_future_s} >= {self.allowed_lateness_s})"
            )
        if self.kafka_sasl_mechanism and not self.kafka_security_protocol.startswith("SASL"):
            raise ValueError(
                "STREAMGUARD_KAFKA_SASL_MECHANISM needs a SASL_* STREAMGUARD_KAFKA_SECURITY_PROTOCOL"
            )
        return self

    # -- derived values ---------------------------------------------------------------------------------------
    @property
    def uses_local_kafka(self) -> bool:
        """Whether Kafka is the embedded broker that `streamguard up` starts."""
        return self.kafka_bootstrap is None

    @property
    def uses_local_sql(self) -> bool:
        """Whether the SQL store is the embedded PostgreSQL that `streamguard up` starts."""
        return self.sql_url is None

    @property
    def brokers(self) -> list[str]:
        """Bootstrap servers as a list (Bytewax's Kafka connector wants a list)."""
        if self.kafka_bootstrap is None:
            return [f"127.0.0.1:{self.local_kafka_port}"]
        return [b.strip() for b in self.kafka_bootstrap.split(",") if b.strip()]

    @property
    def registry_dir(self) -> Path:
        """Where model versions are stored."""
        return self.model_dir if self.model_dir is not None else self.state_dir / "models"

    @property
    def recovery_dir(self) -> Path:
        """Root of the Bytewax recovery stores, one sub-folder per flow."""
        return self.state_dir / "recovery"

    def topic(self, name: str) -> str:
        """Return the physical topic for a logical name in `TOPIC_NAMES`."""
        if name not in TOPIC_NAMES:
            raise ValueError(f"unknown topic {name!r}; expected one of {TOPIC_NAMES}")
        return f"{self.topic_prefix}{name}"

    def kafka_config(self) -> dict[str, str]:
        """Return librdkafka client settings, secrets included: pass to clients, never log."""
        conf = {
            "bootstrap.servers": ",".join(self.brokers),
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.uses_local_kafka:
            # Tansu can leave a request unanswered under load; librdkafka resends it only after this (60 s by
            # default: "Timed out ProduceRequest in flight (after 60030ms)", a 60 s stall in bench-peer).
            conf["socket.timeout.ms"] = "10000"
        return conf

    def kafka_consumer_tuning(self, partitions: int = 1) -> dict[str, str]:
        """Return the settings for a consumer of `partitions` partitions reading at the flows' pace.

        The flows' readers take one partition each; a consumer of decisions (the benchmarks', a
        downstream service) usually takes them all. See `kafka_fetch_wait_max_ms` and `_fetch_pacing`.
        """
        wait = self.kafka_fetch_wait_max_ms
        if wait is None:
            wait = 20 if self.uses_local_kafka else 100
        return self._fetch_pacing(wait, partitions)

    def kafka_mirror_consumer_tuning(self) -> dict[str, str]:
        """Return the consumer settings for the mirror (see `kafka_mirror_fetch_wait_max_ms`)."""
        return self._fetch_pacing(self.kafka_mirror_fetch_wait_max_ms, partitions=1)

    def _fetch_pacing(self, wait_ms: int, partitions: int) -> dict[str, str]:
        """Fetch wait, and on the embedded broker at most one fetch per wait while messages flow.

        Tansu ignores `fetch.min.bytes`: with data arriving every few ms a consumer fetches again as soon
        as an answer comes, a few messages each, and each fetch costs the broker ~0.5 ms of CPU. A consumer
        holding unread messages (`queued.min.messages` 1) waits `fetch.queue.backoff.ms` before the next
        fetch instead. Measured (1,000 msg/s over 4 partitions, 12 consumers, 2-core VM): Tansu 124% ->
        78% of a core, consumer latency p99 485 -> 34 ms. Only for a consumer of one partition: librdkafka
        backs off each partition on its own but keeps one fetch in flight per broker, so a paced consumer
        of several partitions has them fall out of step, each waiting for the fetch in flight for the
        others. Measured (Tansu, 1,000 msg/s over 4 partitions, producers lingering 20 ms, two rounds):
        one consumer of all 4, paced: p99 42.8 / 43.7 ms, unpaced 32.8 / 33.1, Tansu 10-14% of a core
        either way; one consumer per partition 31.4-32.0 paced or not. A real Kafka honours
        `fetch.min.bytes`: left as is.
        """
        tuning = {"fetch.wait.max.ms": str(wait_ms)}
        if self.uses_local_kafka and partitions == 1:
            tuning |= {"queued.min.messages": "1", "fetch.queue.backoff.ms": str(wait_ms)}
        return tuning

    def kafka_producer_tuning(self) -> dict[str, str]:
        """Return the producer settings chosen for streamguard's producers (see `kafka_linger_ms`)."""
        linger = self.kafka_linger_ms
        if linger is None:
            linger = 20.0 if self.uses_local_kafka else 5.0
        return {"linger.ms": f"{linger:g}"}

    def sql_dsn(self) -> str:
        """Return the SQL store's connection string, secret included: pass to psycopg, never log."""
        if self.sql_url is None:
            return f"postgresql://postgres@127.0.0.1:{self.local_pg_port}/streamguard"
        return self.sql_url.get_secret_value()

    def redacted(self) -> dict[str, object]:
        """Return the settings as a dict safe to print (secrets masked)."""
        return self.model_dump(mode="json")
