-- Drift per UTC day: the population stability index of each served feature and of the score (feature
-- 'score') against the acting model's training-time distribution (drift_reference), the same index the
-- flow exports live (streamguard_feature_psi, streamguard_score_psi):
--   SELECT * FROM drift_daily_psi WHERE model_version = 'v0003' AND psi > 0.1 ORDER BY day DESC, psi DESC;
-- PSI = sum over bins of (a - e) * ln(a / e), shares floored at 0.0001 (models.drift_reference.PSI_FLOOR).
-- Below 0.1 stable, 0.1-0.25 moving, above 0.25 shifted.
CREATE OR REPLACE VIEW drift_daily_psi AS
SELECT
    day,
    model_version,
    feature,
    max(n_total) AS n,
    sum(
        (greatest(observed_share, 0.0001) - greatest(expected_share, 0.0001))
        * ln(greatest(observed_share, 0.0001) / greatest(expected_share, 0.0001))
    ) AS psi
FROM drift_daily_bins
GROUP BY day, model_version, feature;
