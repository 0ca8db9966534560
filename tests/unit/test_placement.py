"""Worker placement: our SipHash-1-3 routes string keys exactly as Bytewax 0.21.1 does."""

from __future__ import annotations

import threading

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, cluster_main, run_main

from flows.placement import WorkerCount, bytewax_route, siphash13, worker_count, worker_keys, worker_of


def test_siphash13_matches_rust_default_hasher_vectors():
    # Rust: DefaultHasher::new(); "".hash(&mut h) writes 0xff; b"" alone is the raw SipHash-1-3 of nothing.
    assert siphash13(b"") == 0xD1FBA762150C532C
    assert siphash13(bytes(range(15))) != siphash13(bytes(range(16)))


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_bytewax_sends_each_key_to_the_worker_we_compute(workers):
    seen: dict[str, int] = {}
    threads: dict[int, int] = {}

    class Probe(WorkerCount):
        def build(self, step_id, worker_index, worker_count):
            threads[threading.get_ident()] = worker_index
            return super().build(step_id, worker_index, worker_count)

    keys = [f"k{i}" for i in range(60)] + worker_keys(workers)
    flow = Dataflow("placement")
    op.input("probe", flow, Probe())
    up = op.input("inp", flow, TestingSource([(k, 1) for k in keys]))
    out = op.stateful_map("where", up, lambda state, v: (state, v))
    op.inspect("note", out, lambda _step, kv: seen.__setitem__(kv[0], threads[threading.get_ident()]))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert worker_count() == workers
    assert {k: bytewax_route(k, workers) for k in keys} == seen
    assert [seen[k] for k in worker_keys(workers)] == list(range(workers))


def test_one_worker_needs_no_routing_and_the_count_is_recorded():
    flow = Dataflow("one")
    op.input("count", flow, WorkerCount())
    op.inspect("x", op.input("inp", flow, TestingSource([1])), lambda *_: None)
    run_main(flow)
    assert worker_count() == 1 and worker_keys(1) == ["worker-0"]
    assert worker_of(["T1", "T2"], 1) == [0, 0]
    assert worker_of(["T1", "T2", "T3"], 4) == worker_of(["T1", "T2", "T3"], 4)
