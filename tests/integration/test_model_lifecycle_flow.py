"""The running flow follows the registry: promotion mid-stream, shadow, canary, explanations, refusals."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import xgboost as xgb
from pipeline_harness import prepare, wait_for_decisions

from flows.model_roles import canary_share_of
from models.registry import Registry
from streamguard.core.features import FEATURE_NAMES
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import spawn_flow, stop_flows


def _booster(names, seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, len(names)))
    # Amount drives the label, so real transactions get a spread of scores and some cross the thresholds.
    y = (x[:, 0] + 0.3 * rng.normal(size=3000) > 1.2).astype(int)
    x[:, 0] = np.where(y == 1, 200 + 50 * rng.random(3000), 50 * rng.random(3000))
    return xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=list(names)),
        30,
    )


def test_promotion_switches_once_mid_stream_and_shadow_canary_and_refusals_work(sg_settings):
    txns, labels = simulate(SimulationConfig(days=30, customers=150, terminals=300, seed=21))
    registry = Registry(sg_settings.registry_dir)
    v1 = registry.register(_booster(FEATURE_NAMES, 1), {"note": "v1"})
    v2 = registry.register(_booster(FEATURE_NAMES, 2), {"note": "v2"}, promote=False)
    odd = registry.register(
        _booster([*FEATURE_NAMES[:-1], "something_else"], 3), {"note": "mismatch"}, promote=False
    )
    prepare(sg_settings)
    logs = sg_settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        spawn_flow(sg_settings, "mirror", log_path=logs / "mirror.log"),
        spawn_flow(sg_settings, "fraud", log_path=logs / "fraud.log"),
    ]
    first = txns["ts"].min().floor("D")
    bounds = [first + pd.Timedelta(days=d) for d in (0, 12, 18, 24, 31)]
    segment_ids = []
    changes = [
        lambda: registry.promote(v2.version),
        lambda: (registry.set_shadow(v1.version), registry.set_canary(v1.version, 0.3)),
        lambda: registry.promote(odd.version),  # no feature check here: CURRENT names a model to refuse
    ]
    try:
        # The stream never stops; between segments the registry changes, and the flow (which polls it every
        # 2 s, at batch boundaries) must apply each change before the next segment's first batch.
        for i in range(4):
            start, end = bounds[i], bounds[i + 1]
            replay(sg_settings, txns, labels, start=start, end=end, progress=False)
            ids = set(txns.loc[(txns["ts"] >= start) & (txns["ts"] < end), "transaction_id"].tolist())
            segment_ids.append(ids)
            wait_for_decisions(sg_settings, sum(map(len, segment_ids)), procs)
            if i < 3:
                changes[i]()
                time.sleep(2.5)
        decisions = wait_for_decisions(sg_settings, len(txns), procs)
    finally:
        stop_flows(procs)

    ids = [d.transaction_id for d in decisions]
    assert len(ids) == len(set(ids)) == len(txns)
    by_id = {d.transaction_id: d for d in decisions}
    seg = [[by_id[i] for i in sorted(s)] for s in segment_ids]
    # Promotion mid-stream: one switch, at a batch boundary, never to the refused model.
    assert {d.model_version for d in seg[0]} == {v1.version}
    assert {d.model_version for d in seg[1]} == {v2.version}
    assert {d.model_version for d in seg[3] if d.variant == "champion"} == {v2.version}
    assert "refusing model" in (logs / "fraud.log").read_text()
    # Shadow on every row, never acted on; canary on a deterministic ~30% share, scored by v1.
    later = seg[2] + seg[3]
    assert all(d.shadow_model_version == v1.version and d.shadow_score is not None for d in later)
    assert all(d.shadow_model_version is None for d in seg[0] + seg[1])
    routed = canary_share_of(np.array([d.transaction_id for d in later])) < 0.3
    assert [d.variant == "canary" for d in later] == routed.tolist()
    assert all(d.model_version == v1.version for d in later if d.variant == "canary")
    assert 0.15 < routed.mean() < 0.45
    # Explanations: exactly the flagged decisions carry their top contributions.
    for d in decisions:
        flagged = d.score is not None and d.score >= sg_settings.review_threshold
        assert (d.explanation is not None) == flagged
        if flagged:
            assert 1 <= len(d.explanation) <= 5 and set(d.explanation) <= set(FEATURE_NAMES)
    assert any(d.explanation for d in decisions), "no decision crossed the review threshold"
