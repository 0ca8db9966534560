"""Benchmark XGBoost scoring: one call per event vs micro-batches, on the CPU and (when present) the GPU.

Trains a 300-tree, depth-8 model on 30 synthetic features (hist; labels noisy enough that the trees stay
deep), then times single-row calls and batches of 64, 1k, 16k and 256k rows, with one statistic for every
row of every table: the median duration of one call over its repeats (after a warm-up), as rows/s.

CPU tables, `inplace_predict` on a booster pinned to a thread count, the same for per-event calls and
batches (so a ratio compares batching, not threads):
- 1 thread;
- all cores (`os.cpu_count()` threads);
- as the flow calls it: `Scorer.score`, which scores up to 64 rows on 1 thread and more on all cores.
GPU rows (when CUDA is present) time `Scorer.score` on a CUDA booster, and `score_on_device` (CuPy in,
CuPy out: no host copies), the ceiling for a flow that kept its batches on the device.
Prints rows/s and ratios to per-event calls, GPU / CPU ratios, then one summary line per table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import xgboost as xgb

from models.scorer import Scorer, cuda_available

SKIPPED = "skipped: no CUDA device"


def build_model(rows: int, features: int, trees: int, depth: int, seed: int = 0) -> xgb.Booster:
    """Train the benchmark model: `trees` trees of depth `depth` on `features` synthetic columns."""
    rng = np.random.default_rng(seed)
    x = synthetic_rows(rows, features, rng)
    signal = 0.3 * np.nan_to_num(x[:, : features // 3]).sum(axis=1) + 0.5 * np.sin(
        2 * np.nan_to_num(x[:, -1])
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-signal))).astype(np.float32)
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": depth,
        "max_bin": 64,
        "eta": 0.1,
        "min_child_weight": 0,
        "seed": seed,
    }
    names = [f"f{i:02d}" for i in range(features)]
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=trees)


def synthetic_rows(n: int, features: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, features)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # served features have gaps
    return x


def time_calls(score, inputs: list, min_time: float, min_calls: int) -> tuple[float, int]:
    """Return (rows/s from the median call, calls made), cycling through `inputs` (all the same length).

    Calls until `min_calls` were made and `min_time` seconds passed (at most 10,000 calls), after
    one warm-up call per input (up to 50).
    """
    for x in inputs[:50]:
        score(x)
    durations: list[float] = []
    start = time.perf_counter()
    while len(durations) < min_calls or (time.perf_counter() - start < min_time and len(durations) < 10_000):
        x = inputs[len(durations) % len(inputs)]
        t0 = time.perf_counter()
        score(x)
        durations.append(time.perf_counter() - t0)
    return len(inputs[0]) / statistics.median(durations), len(durations)


def measure(score, pool, batches, events, min_time, to_input=lambda a: a) -> dict[str, tuple[float, int]]:
    """Return {"per_event": (rows/s, calls), "64": ..., ...} for one scoring function.

    Per-event calls take `events` distinct rows in turn; each batch size calls one batch repeatedly.
    """
    rows = [to_input(pool[i : i + 1]) for i in range(events)]
    out = {"per_event": time_calls(score, rows, min_time, events)}
    for b in batches:
        out[str(b)] = time_calls(score, [to_input(pool[:b])], min_time, 3)
    return out


def pinned(booster: xgb.Booster, threads: int):
    """Return `inplace_predict` of a CPU copy of the booster limited to `threads` threads."""
    copy = booster.copy()
    copy.set_param({"device": "cpu", "nthread": threads})
    return copy.inplace_predict


def _label(key: str) -> str:
    return "per event" if key == "per_event" else f"batch {int(key):,}"


def print_table(results: dict[str, dict[str, tuple[float, int]] | None], keys: list[str]) -> None:
    print(f"{'device / path':40} {'mode':14} {'calls':>7} {'rows/s':>14} {'vs per event':>13}")
    for name, res in results.items():
        if res is None:
            print(f"{name:40} {'all':14} {SKIPPED}")
            continue
        base = res["per_event"][0]
        for key in keys:
            if key not in res:
                continue
            rate, calls = res[key]
            print(f"{name:40} {_label(key):14} {calls:7d} {rate:14,.0f} {rate / base:12.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=30_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--events", type=int, default=2_000, help="single-row calls to time (at least)")
    parser.add_argument("--batches", default="64,1024,16384,262144", help="comma-separated batch sizes")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds to keep calling per batch size")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    keys = ["per_event", *(str(b) for b in batches)]

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"xgboost {xgb.__version__}, numpy {np.__version__}"
    )
    t0 = time.perf_counter()
    booster = build_model(args.train_rows, args.features, args.trees, args.depth)
    leaves = (booster.trees_to_dataframe()["Feature"] == "Leaf").sum() / args.trees
    print(
        f"model: {args.trees} trees, max_depth {args.depth} ({leaves:.0f} leaves per tree on average), "
        f"{args.features} features; trained on {args.train_rows:,} rows in {time.perf_counter() - t0:.1f}s"
    )
    pool = synthetic_rows(max([*batches, args.events]), args.features, np.random.default_rng(1))
    names = booster.feature_names

    cores = os.cpu_count() or 1
    cpu = Scorer(booster, names, device="cpu")
    results: dict[str, dict | None] = {}
    for label, threads in (("cpu, 1 thread", 1), (f"cpu, all cores ({cores} threads)", cores)):
        results[label] = measure(pinned(booster, threads), pool, batches, args.events, args.min_time)
    results["cpu, Scorer.score (1 thread <= 64 rows)"] = measure(
        cpu.score, pool, batches, args.events, args.min_time
    )
    if cuda_available():
        import cupy

        gpu = Scorer(booster, names, device="gpu")
        results["gpu (host in/out)"] = measure(gpu.score, pool, batches, args.events, args.min_time)

        def on_device(x):
            out = gpu.score_on_device(x)
            cupy.cuda.get_current_stream().synchronize()
            return out

        results["gpu (device-resident)"] = measure(
            on_device, pool, batches, args.events, args.min_time, to_input=cupy.asarray
        )
        sample = pool[: min(100_000, len(pool))]
        diff = float(np.max(np.abs(gpu.score(sample) - cpu.score(sample))))
        print(f"gpu vs cpu: max |score difference| on {len(sample):,} rows = {diff:.2e}")
    else:
        results["gpu"] = None
    print()
    print_table(results, keys)

    print()
    print("GPU / CPU (rows/s ratio at the same batch size):")
    gpu_res = [(n, r) for n, r in results.items() if n.startswith("gpu") and r is not None]
    if not gpu_res:
        print(f"  {SKIPPED}")
    for name, res in gpu_res:
        cpu_ref = results["cpu, Scorer.score (1 thread <= 64 rows)"]
        ratios = "  ".join(f"{_label(k)}={res[k][0] / cpu_ref[k][0]:.1f}x" for k in keys)
        print(f"  {name} vs cpu Scorer.score: {ratios}")

    print()
    for name, res in results.items():
        if res is None or name == "gpu (device-resident)":
            continue
        per_event = res["per_event"][0]
        batch_1k = res.get("1024", (float("nan"), 0))[0]
        print(
            f"scoring: {name}: per_event={per_event:,.0f} batch_1k={batch_1k:,.0f} "
            f"ratio={batch_1k / per_event:.1f}x"
        )
    if results.get("gpu", 0) is None:
        print(f"scoring: gpu {SKIPPED}")


if __name__ == "__main__":
    main()
