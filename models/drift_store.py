"""Put the models' drift references in the SQL store and read the daily drift indexes back.

`sql/60_monitoring/drift_daily_psi` compares each day's served features with the acting model's
training-time bins, which live in the table `drift_reference`; `publish_registry` copies them there from
every registered version's metadata (idempotent: a version's rows are replaced). `streamguard drift
publish` runs it; `streamguard drift show` runs it too, then prints the index per feature and day.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from models.drift_reference import SCORE, reference_rows
from models.registry import Registry
from streamguard.core.settings import Settings
from streamguard.core.store import connect

_INSERT = (
    "INSERT INTO drift_reference "
    "(model_version, feature, bin, lower_bound, upper_bound, is_missing, expected_share) VALUES "
)
_ROW = "(%s, %s, %s, %s::double precision, %s::double precision, %s, %s)"
SHIFTED = 0.25
"""An index above this is called shifted (and flagged in `show`); 0.1-0.25 is moving."""


def publish_reference(settings: Settings, version: str, reference: Mapping) -> int:
    """Replace one version's rows in `drift_reference`; return how many were written."""
    rows = reference_rows(version, reference)
    with connect(settings) as conn:
        # Two autocommitted statements, not one transaction: Materialize limits what a transaction may mix.
        conn.execute("DELETE FROM drift_reference WHERE model_version = %s", (version,))
        conn.execute(_INSERT + ", ".join([_ROW] * len(rows)), [v for row in rows for v in row])
    return len(rows)


def publish_registry(settings: Settings) -> list[str]:
    """Publish every registered version that carries a reference; return their names."""
    published = []
    for v in Registry(settings.registry_dir).list():
        reference = v.metadata.get("drift_reference")
        if reference:
            publish_reference(settings, v.version, reference)
            published.append(v.version)
    return published


def daily_psi(settings: Settings, version: str, days: int = 7) -> dict[str, dict[date, float]]:
    """Return {feature: {day: psi}} for the version's last `days` days with decisions."""
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT day, feature, psi FROM drift_daily_psi WHERE model_version = %s AND day >= "
            "(SELECT max(day) FROM drift_daily_psi WHERE model_version = %s) - %s::integer",
            (version, version, days - 1),
        ).fetchall()
    out: dict[str, dict[date, float]] = {}
    for day, feature, value in rows:
        out.setdefault(feature, {})[day] = float(value)
    return out


def format_daily_psi(version: str, by_feature: Mapping[str, Mapping[date, float]]) -> str:
    """Return a table a person reads: one row per feature (score first), one column per day, '!' if shifted."""
    if not by_feature:
        return f"no drift index for {version}: no decisions by it, or its reference is not published"
    days = sorted({d for values in by_feature.values() for d in values})
    names = sorted(by_feature, key=lambda n: (n != SCORE, -max(by_feature[n].values()), n))
    header = f"{'PSI ' + version:28}" + "".join(f"{d:%m-%d}".rjust(8) for d in days)
    lines = [header]
    for name in names:
        cells = []
        for d in days:
            value = by_feature[name].get(d)
            cells.append("-".rjust(8) if value is None else f"{value:7.3f}{'!' if value > SHIFTED else ' '}")
        lines.append(f"{name:28}" + "".join(cells))
    lines.append(f"('!': above {SHIFTED}, shifted; 0.1-{SHIFTED} moving; below 0.1 stable)")
    return "\n".join(lines)
