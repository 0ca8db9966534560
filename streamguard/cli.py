"""The `streamguard` command: local stack, data, SQL, flows, training and exports (`--help` on each verb)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from streamguard.core.settings import Settings


def _when(text: str) -> datetime:
    """Parse an ISO date or datetime; naive values are UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.core.topics import ensure_topics
    from streamguard.local.stack import LocalStack

    statuses = LocalStack(settings).up()
    _print_statuses(statuses)
    created = ensure_topics(settings)
    print(
        f"topics: {len(created)} created, all present ({', '.join(settings.topic(n) for n in _topic_names())})"
    )
    return 0


def _topic_names():
    from streamguard.core.settings import TOPIC_NAMES

    return TOPIC_NAMES


def _print_statuses(statuses) -> None:
    for s in statuses:
        state = "external" if s.external else ("running" if s.running else "stopped")
        health = "healthy" if s.healthy else "unhealthy"
        pid = f" pid={s.pid}" if s.pid else ""
        print(f"{s.name:9} {s.address:22} {state:8} {health:9}{pid}  {s.detail}")


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.local.stack import LocalStack

    _print_statuses(LocalStack(settings).down())
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.local.stack import LocalStack

    statuses = LocalStack(settings).status()
    _print_statuses(statuses)
    return 0 if all(s.healthy for s in statuses) else 1


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.data.simulate import SimulationConfig, simulate, summarize, write_dataset

    # By default the data ends before today (UTC): the flows refuse events dated after they are sent.
    start = args.start or datetime.now(UTC).date() - timedelta(days=args.days)
    cfg = SimulationConfig(
        days=args.days, customers=args.customers, terminals=args.terminals, seed=args.seed, start=start
    )
    transactions, labels = simulate(cfg)
    paths = write_dataset(transactions, labels, args.out)
    print(summarize(transactions, labels))
    print(f"wrote {paths['transactions']} and {paths['labels']}")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.core.topics import ensure_topics
    from streamguard.data.replay import replay_files

    ensure_topics(settings)
    summary = replay_files(
        settings,
        args.transactions,
        args.labels,
        speedup=args.speedup,
        max_rate=args.max_rate,
        start=args.start,
        end=args.end,
        progress=not args.quiet,
    )
    print(
        f"replayed {summary.transactions} transactions and {summary.labels} labels in {summary.seconds:.1f}s "
        f"({summary.rate:,.0f} msg/s); skipped {summary.skipped_before_timeline} already on the timeline"
    )
    if summary.held_back_future:
        print(
            f"held back {summary.held_back_future} events dated in the future (more than "
            f"STREAMGUARD_MAX_FUTURE_S={settings.max_future_s:g} s after now): the flows would refuse them; "
            "run the same replay again once they are due (the timeline continues where this one ended)"
        )
    return 0


def cmd_sql_apply(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.sql.apply import SqlApplyError, apply_sql, dry_run_text

    try:
        if args.dry_run:
            print(dry_run_text(settings, args.target))
            return 0
        files = apply_sql(settings, args.target)
    except SqlApplyError as exc:
        print(f"sql apply: {exc}", file=sys.stderr)
        return 2
    for f in files:
        print(f"applied {f.relpath}")
    return 0


def cmd_sql_check(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.sql.lint import cmd_sql_check as check

    return check(settings, args)


def cmd_sql_shell(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.sql.shell import run_psql

    # The password goes to psql in a 0600 pass file, never on its command line (streamguard.sql.shell).
    return run_psql(settings, args.command)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from models.training_job import run_training

    return run_training(settings, args)


def cmd_decisions(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.data.decisions_export import export_decisions

    export_decisions(settings, args.out)
    return 0


def cmd_flow_run(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.local.flow_runner import flow_command

    cmd = flow_command(settings, args.name, workers=args.workers, recovery=not args.no_recovery)
    print("running:", " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)  # noqa: S606 - replace this process with the flow
    return 0  # not reached


def cmd_flow_reset(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.local.flow_runner import RESET_CONSEQUENCES, recovery_dir, reset_recovery

    folder = recovery_dir(settings, args.name)
    print(f"{args.name} flow recovery store: {folder}\n{RESET_CONSEQUENCES[args.name]}")
    if not args.yes:
        print(
            f"nothing deleted: run `streamguard flow reset {args.name} --yes` to delete it", file=sys.stderr
        )
        return 2
    deleted = reset_recovery(settings, args.name)
    print(f"deleted {deleted}" if deleted else "nothing to delete: the flow has no recovery store yet")
    return 0


def cmd_repair(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.data.repair import repair_progress

    repairs = repair_progress(settings, dry_run=args.dry_run)
    for r in repairs:
        print(r.describe())
    changed = sum(r.changed for r in repairs)
    verb = "would change" if args.dry_run else "changed"
    print(f"source_progress: {verb} {changed} of {len(repairs)} partitions")
    if changed and not args.dry_run:
        print(
            "the scoring flow's recovery store may hold the same poisoned event times: stop it, run "
            "`streamguard flow reset fraud --yes`, and start it again"
        )
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streamguard.local.demo import run_demo

    return run_demo(settings, args)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (every verb has --help)."""
    from models.cli import add_models_commands, add_training_arguments  # cheap: no xgboost import
    from streamguard.operate.cli import add_operate_commands  # top, alerts, drift

    parser = argparse.ArgumentParser(prog="streamguard", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    verb("up", cmd_up, "start the embedded local stack (Kafka-API broker + PostgreSQL 16) and create topics")
    verb(
        "down",
        cmd_down,
        "stop the embedded local stack (a memory-only broker drops its topics; STREAMGUARD_LOCAL_KAFKA_STORAGE=disk "
        "keeps them)",
    )
    verb("status", cmd_status, "show the local stack's services and health (exit 1 if any is unhealthy)")

    p = verb("simulate", cmd_simulate, "write synthetic transactions and fraud labels as Parquet (seeded)")
    p.add_argument("--days", type=int, required=True, help="number of days to simulate")
    p.add_argument("--customers", type=int, required=True, help="number of customers (cards)")
    p.add_argument("--terminals", type=int, required=True, help="number of terminals")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (transactions.parquet, labels.parquet)"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument(
        "--start",
        type=date.fromisoformat,
        default=None,
        help="first day, YYYY-MM-DD (default: DAYS days ago, so the transactions end before today; their labels "
        "come up to ~40 days later, and replay holds back those not yet due). Transaction ids encode the day, "
        "so periods simulated separately never share one",
    )

    p = verb("replay", cmd_replay, "produce transactions and labels to Kafka in event-time order")
    p.add_argument("--transactions", type=Path, required=True, help="transactions file (.parquet or .csv)")
    p.add_argument("--labels", type=Path, required=True, help="labels file (.parquet or .csv)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speedup", type=float, help="replay event time this many times faster than real time")
    pace.add_argument("--max-rate", type=float, help="at most this many messages per second")
    p.add_argument("--start", type=_when, help="only events at or after this time (ISO-8601; naive = UTC)")
    p.add_argument("--end", type=_when, help="only events before this time (ISO-8601; naive = UTC)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    sql_p = verbs.add_parser("sql", help="manage the SQL store", description="manage the SQL store")
    sql_verbs = sql_p.add_subparsers(dest="sql_verb", required=True, metavar="SQL_VERB")
    p = sql_verbs.add_parser(
        "apply",
        help="apply sql/ to the store, idempotently, in layer order",
        description="apply sql/ to the store, idempotently, in layer order",
    )
    p.set_defaults(func=cmd_sql_apply)
    p.add_argument("--target", choices=("postgres", "materialize"), default="postgres")
    p.add_argument("--dry-run", action="store_true", help="print the statements instead of running them")

    p = sql_verbs.add_parser(
        "check",
        help="lint sql/ for what Materialize rejects; check every flow lookup has its index",
        description="lint sql/ for what Materialize rejects; check every flow lookup has its index",
    )
    p.set_defaults(func=cmd_sql_check)
    p = sql_verbs.add_parser(
        "shell",
        help="open psql on the store, streamguard's schema first on the path",
        description="open psql on the store, streamguard's schema first on the path",
    )
    p.set_defaults(func=cmd_sql_shell)
    p.add_argument("-c", "--command", help="run one SQL command and exit")

    p = verb("train", cmd_train, "train XGBoost on training examples read from SQL, evaluate, register")
    p.add_argument(
        "--train-start",
        type=_when,
        default=None,
        help="first day of the train window (default: the windows end where labels are final: the latest "
        "label minus STREAMGUARD_LABEL_MATURITY_DAYS, and the last whole day of decisions)",
    )
    p.add_argument("--train-days", type=int, default=7)
    p.add_argument("--delay-days", type=int, default=7)
    p.add_argument("--test-days", type=int, default=7)
    p.add_argument(
        "--scores-out", type=Path, help="write test scores (transaction_id, score) to this Parquet file"
    )
    p.add_argument("--no-register", action="store_true", help="evaluate only; do not register the model")
    p.add_argument(
        "--promote-if-better",
        action="store_true",
        help="register, but promote only if its protocol average precision beats the current model's on "
        "the same test rows; refuse (saying why) when the current model cannot be loaded or compared",
    )

    add_training_arguments(p)

    p = verb("decisions", cmd_decisions, "export the scored decisions from Kafka to Parquet")
    p.add_argument("--out", type=Path, required=True, help="output Parquet file")

    flow_p = verbs.add_parser("flow", help="run a Bytewax flow", description="run a Bytewax flow")
    flow_verbs = flow_p.add_subparsers(dest="flow_verb", required=True, metavar="FLOW_VERB")
    p = flow_verbs.add_parser(
        "run",
        help="run flows.<name>:flow with recovery on (-r/-s/-b)",
        description="run flows.<name>:flow with recovery on (-r/-s/-b)",
    )
    p.set_defaults(func=cmd_flow_run)
    p.add_argument("name", choices=("fraud", "mirror"))
    p.add_argument("-w", "--workers", type=int, default=1, help="worker threads in this process")
    p.add_argument(
        "--no-recovery", action="store_true", help="run without recovery (re-reads topics from the start)"
    )

    p = flow_verbs.add_parser(
        "reset",
        help="delete a flow's recovery store (Kafka offsets and state); it then re-reads its topics",
        description="delete a flow's recovery store (Kafka offsets and state); it then re-reads its topics. "
        "Stop the flow first. The scoring flow decides every transaction again; decisions already in "
        "the decisions topic within the dedupe window (STREAMGUARD_DEDUPE_WINDOW_S, by Kafka time) are "
        "not written again, older ones are (the SQL decisions view keeps one per transaction).",
    )
    p.set_defaults(func=cmd_flow_reset)
    p.add_argument("name", choices=("fraud", "mirror"))
    p.add_argument("--yes", action="store_true", help="really delete it (without: say what would be deleted)")

    p = verb(
        "repair",
        cmd_repair,
        "recompute the store's per-partition event-time progress from the rows the contract accepts "
        "(repairs progress an earlier version let a future-dated event poison)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")

    add_models_commands(verbs)
    add_operate_commands(verbs)

    p = verb(
        "demo", cmd_demo, "the main job on the local stack: bootstrap a model if needed, then live decisions"
    )
    p.add_argument(
        "--live-minutes", type=float, default=1.0, help="how long to show live decisions (default 1)"
    )
    p.add_argument("--rate", type=float, default=200.0, help="live replay rate, messages/s (default 200)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings()
    except ValidationError as exc:
        # Name the variables: a bad setting is a configuration error, not a crash.
        for err in exc.errors():
            field = ".".join(str(x) for x in err["loc"]) or "settings"
            print(f"configuration error: STREAMGUARD_{field.upper()}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        return args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for users; -v shows the traceback
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
