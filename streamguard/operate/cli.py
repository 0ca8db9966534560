"""Add the verbs that operate a running pipeline: `top`, `alerts`, `drift publish|show`.

Thin wrappers: the work is in `streamguard.operate.top`, `streamguard.operate.alerts_view` and `models.drift_store`.
"""

from __future__ import annotations

import argparse


def cmd_top(settings, args: argparse.Namespace) -> int:
    from streamguard.operate.top import default_targets, run_top

    urls = default_targets(settings)
    for item in args.url or []:
        name, _, url = item.partition("=")
        if not url:
            raise ValueError(f"--url takes NAME=URL (e.g. fraud=http://pod:3030/metrics), got {item!r}")
        urls[name] = url
    return run_top(
        settings,
        urls=urls,
        interval_s=args.interval,
        window_s=args.window,
        once=args.once,
        alerts=not args.no_alerts,
    )


def cmd_alerts(settings, args: argparse.Namespace) -> int:
    from streamguard.operate.alerts_view import show_alerts

    show_alerts(settings, follow=args.follow, min_score=args.min_score, last=args.last)
    return 0


def cmd_drift_publish(settings, args: argparse.Namespace) -> int:
    from models.drift_store import publish_registry

    published = publish_registry(settings)
    print(f"published the drift reference of {', '.join(published) or 'no version (none carries one)'}")
    return 0


def cmd_drift_show(settings, args: argparse.Namespace) -> int:
    from models.drift_store import daily_psi, format_daily_psi, publish_registry
    from models.registry import Registry

    publish_registry(settings)  # what is shown is compared with what the registry holds now
    version = args.version
    if version is None:
        current = Registry(settings.registry_dir).current()
        if current is None:
            raise LookupError(f"model registry {settings.registry_dir} has no current version; name one")
        version = current.version
    print(format_daily_psi(version, daily_psi(settings, version, args.days)))
    return 0


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a score is between 0 and 1, got {text}")
    return value


def add_operate_commands(verbs: argparse._SubParsersAction) -> None:
    """Add `top`, `alerts` and `drift` to the top-level subparsers."""

    def verb(parent, name: str, func, help_: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = verb(
        verbs,
        "top",
        cmd_top,
        "live view of the running flows: throughput, lag, latency, decisions, drift, alerts",
    )
    p.add_argument(
        "--url",
        action="append",
        metavar="NAME=URL",
        help="scrape this /metrics as flow NAME (fraud, mirror); default: localhost and the ports in settings",
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes (default 2)")
    p.add_argument(
        "--window", type=float, default=30.0, help="seconds rates and quantiles cover (default 30)"
    )
    p.add_argument("--once", action="store_true", help="print one frame (after two scrapes) and exit")
    p.add_argument("--no-alerts", action="store_true", help="do not read the alerts topic")

    p = verb(
        verbs, "alerts", cmd_alerts, "print alerts with score, decision, model and why; --follow for new ones"
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts (Ctrl-C to stop)")
    p.add_argument("--min-score", type=_score, default=0.0, help="only alerts scored at least this (0-1)")
    p.add_argument(
        "--last", type=int, default=10, help="first print the newest N alerts (default 10; 0: none)"
    )

    drift = verbs.add_parser(
        "drift", help="drift of the served features", description="drift of the served features"
    )
    drift_verbs = drift.add_subparsers(dest="drift_verb", required=True, metavar="DRIFT_VERB")
    verb(drift_verbs, "publish", cmd_drift_publish, "copy every model's drift reference into the SQL store")
    p = verb(
        drift_verbs, "show", cmd_drift_show, "PSI per feature and day from SQL (default: the current model)"
    )
    p.add_argument("version", nargs="?", help="model version (default: current)")
    p.add_argument("--days", type=int, default=7, help="days to show (default 7)")
