"""The `streamguard models ...` verbs and the extra `streamguard train` flags, ready to plug into argparse.

`add_models_commands(verbs)` adds the `models` verb (list, show, promote, rollback, shadow, canary) to the
top-level subparsers; each sub-verb sets `func(settings, args) -> exit status`. Registry errors (unknown
version, tampered file, feature mismatch, nothing to roll back) print one `error:` line and return 1.

Building the parser imports nothing heavy: XGBoost (seconds to import) loads only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from streamguard.core.settings import DEVICES


def _registry(settings):
    from models.registry import Registry

    return Registry(settings.registry_dir)


def _expected(args: argparse.Namespace) -> tuple[str, ...] | None:
    from streamguard.core.features import FEATURE_NAMES

    return None if getattr(args, "force", False) else FEATURE_NAMES


def _reporting_errors(func: Callable[[object, argparse.Namespace], int]):
    """Turn the registry's refusals into one clear stderr line and exit status 1."""

    def run(settings, args: argparse.Namespace) -> int:
        from models.registry import FeatureMismatchError, ModelIntegrityError

        try:
            return func(settings, args)
        except (KeyError, LookupError, ValueError, ModelIntegrityError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            if isinstance(exc, FeatureMismatchError):
                message += " (use --force to accept it anyway)"
            print(f"error: {message}", file=sys.stderr)
            return 1

    run.__doc__ = func.__doc__
    return run


def _metric(v, key: str) -> str:
    value = v.metadata.get("metrics", {}).get(key)
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _roles(registry) -> dict[str, str]:
    a = registry.assignments()
    roles: dict[str, list[str]] = {}
    if a.current:
        roles.setdefault(a.current, []).append("current")
    if a.shadow:
        roles.setdefault(a.shadow, []).append("shadow")
    if a.canary:
        roles.setdefault(a.canary, []).append(f"canary {a.canary_share:.0%}")
    return {version: ", ".join(r) for version, r in roles.items()}


@_reporting_errors
def cmd_list(settings, args: argparse.Namespace) -> int:
    """List model versions, oldest first, with their protocol test metrics; * marks the current one."""
    registry = _registry(settings)
    versions = registry.list()
    if not versions:
        print(f"no model versions in {registry.root}")
        return 0
    roles = _roles(registry)
    print(f"  {'version':8} {'created (UTC)':19} {'parent':7} {'AUC':>6} {'AP':>6} {'CP@100':>6}  roles")
    for v in versions:
        mark = "*" if "current" in roles.get(v.version, "") else " "
        created = str(v.metadata.get("created_at", ""))[:19].replace("T", " ")
        print(
            f"{mark} {v.version:8} {created:19} {v.metadata.get('parent') or '-':7} {_metric(v, 'auc_roc')} "
            f"{_metric(v, 'average_precision')} {_metric(v, 'card_precision_top_100')}  "
            f"{roles.get(v.version, '')}"
        )
    return 0


@_reporting_errors
def cmd_show(settings, args: argparse.Namespace) -> int:
    """Show one version's metadata, roles, integrity and whether its features match the served ones."""
    from models.registry import FeatureMismatchError, ModelIntegrityError, check_feature_names
    from streamguard.core.features import FEATURE_NAMES

    registry = _registry(settings)
    if args.version is None:
        v = registry.current()
        if v is None:
            raise LookupError(f"model registry {registry.root} has no current version; name one")
    else:
        v = registry.get(args.version)
    if args.json:
        print(json.dumps(v.metadata, indent=2))
        return 0
    try:
        registry.verify(v.version)
        integrity = "ok"
    except ModelIntegrityError:
        integrity = "MISMATCH: the model file changed after registration; it will not load"
    try:
        check_feature_names(v, FEATURE_NAMES)
        features = f"match the {len(FEATURE_NAMES)} served features"
    except FeatureMismatchError as exc:
        features = f"DIFFER from the served features: {exc}"
    md = v.metadata
    windows = md.get("windows") or {}
    lines = [
        f"version      {v.version}  {_roles(registry).get(v.version, '')}".rstrip(),
        f"path         {v.path}",
        f"created_at   {md.get('created_at')}",
        f"parent       {md.get('parent') or '-'}",
        f"sha256       {md.get('sha256')} ({integrity})",
        f"features     {len(v.feature_names)}: {', '.join(v.feature_names)}",
        f"             {features}",
    ]
    if windows:
        lines.append(f"train window [{windows.get('train_start')}, {windows.get('train_end')})")
        lines.append(f"test window  [{windows.get('test_start')}, {windows.get('test_end')})")
    if "data_fingerprint" in md:
        lines.append(f"data         {md.get('n_train')} train rows, fingerprint {md['data_fingerprint']}")
    for key, value in (md.get("metrics") or {}).items():
        lines.append(f"protocol     {key} = {value}")
    for key, value in (md.get("metrics_all_transactions") or {}).items():
        lines.append(f"all txns     {key} = {value}")
    if md.get("tuning"):
        best = md["tuning"]["best"]
        lines.append(
            f"tuning       {len(md['tuning']['trials'])} candidate(s) on {len(md['tuning'].get('folds', []))} "
            f"folds: max_depth={best['max_depth']} eta={best['eta']} "
            f"min_child_weight={best.get('min_child_weight')} imbalance={best.get('imbalance')} "
            f"trees={best['num_boost_round']} (validation AP {best['average_precision']})"
        )
    if md.get("drift_reference"):
        lines += _drift_lines(settings, v.version, md["drift_reference"])
    if md.get("promotion"):
        lines.append(f"promotion    {md['promotion']}")
    if md.get("report_dir"):
        report = Path(md["report_dir"])
        lines.append(f"report       {report if report.is_absolute() else v.path / report}")
    print("\n".join(lines))
    return 0


def _drift_lines(settings, version: str, reference: dict) -> list[str]:
    """The training-time distributions, with each feature's newest daily drift index if the store has one."""
    from models.drift_reference import describe

    psi: dict[str, float] | None = None
    try:
        from models.drift_store import daily_psi

        days = daily_psi(settings, version, days=1)
        psi = {name: by_day[max(by_day)] for name, by_day in days.items() if by_day} or None
    except Exception:  # noqa: BLE001 - the store may be down; the reference is still worth showing
        psi = None
    return ["drift        " + line for line in describe(reference, psi)]


@_reporting_errors
def cmd_promote(settings, args: argparse.Namespace) -> int:
    """Make a version current; the running flow switches to it at its next batch boundary."""
    registry = _registry(settings)
    previous = registry.current()
    target = registry.promote(args.version, expected_features=_expected(args))
    print(f"promoted {target.version} (was {previous.version if previous else 'none'})")
    return 0


@_reporting_errors
def cmd_rollback(settings, args: argparse.Namespace) -> int:
    """Make current again the version the last promotion replaced."""
    registry = _registry(settings)
    previous = registry.current()
    target = registry.rollback(expected_features=_expected(args))
    print(f"rolled back to {target.version} (was {previous.version if previous else 'none'})")
    return 0


def _version_or_clear(args: argparse.Namespace, verb: str) -> None:
    if (args.version is None) == (not args.clear):
        raise ValueError(
            f"give either a version or --clear: `streamguard models {verb} V` or `... {verb} --clear`"
        )


@_reporting_errors
def cmd_shadow(settings, args: argparse.Namespace) -> int:
    """Name a shadow model (scored alongside, logged, never acted on), or clear it."""
    _version_or_clear(args, "shadow")
    registry = _registry(settings)
    if args.clear:
        registry.clear_shadow()
        print("shadow cleared")
        return 0
    target = registry.set_shadow(args.version, expected_features=_expected(args))
    print(f"shadow: {target.version} (scored alongside the current model, never acted on)")
    return 0


@_reporting_errors
def cmd_canary(settings, args: argparse.Namespace) -> int:
    """Route a share of traffic to a canary model, or clear it."""
    _version_or_clear(args, "canary")
    registry = _registry(settings)
    if args.clear:
        registry.clear_canary()
        print("canary cleared: all traffic on the current model")
        return 0
    if args.share is None:
        raise ValueError("a canary needs --share (0 < share <= 1), e.g. --share 0.1")
    canary = registry.set_canary(args.version, args.share, expected_features=_expected(args))
    print(f"canary: {canary.version.version} acts on {canary.share:.1%} of traffic")
    return 0


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"share must be in (0, 1], got {text}")
    return value


def add_models_commands(verbs: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `models list|show|promote|rollback|shadow|canary` to the top-level subparsers; return `models`."""
    about = "inspect and manage the model registry (the running flow follows it without a restart)"
    models_p = verbs.add_parser("models", help=about, description=about)
    sub = models_p.add_subparsers(dest="models_verb", required=True, metavar="MODELS_VERB")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    force_help = "accept a model whose feature names or order differ from the served FEATURE_NAMES"
    add("list", cmd_list, "list model versions (* = current) with their test metrics and roles")
    p = add("show", cmd_show, "show a version's metadata, integrity and feature check (default: current)")
    p.add_argument("version", nargs="?", help="version, e.g. v0003 (default: the current one)")
    p.add_argument("--json", action="store_true", help="print metadata.json as stored")
    p = add("promote", cmd_promote, "make a version current (checked: sha256, feature names)")
    p.add_argument("version", help="version to promote, e.g. v0003")
    p.add_argument("--force", action="store_true", help=force_help)
    p = add("rollback", cmd_rollback, "make current again the version the last promotion replaced")
    p.add_argument("--force", action="store_true", help=force_help)
    p = add("shadow", cmd_shadow, "score a version alongside the current one (logged, never acted on)")
    p.add_argument("version", nargs="?", help="version to shadow, e.g. v0004")
    p.add_argument("--clear", action="store_true", help="stop shadow scoring")
    p.add_argument("--force", action="store_true", help=force_help)
    p = add("canary", cmd_canary, "let a version act on a share of traffic instead of the current one")
    p.add_argument("version", nargs="?", help="version to route traffic to, e.g. v0004")
    p.add_argument("--share", type=_share, help="share of traffic, 0 < share <= 1 (e.g. 0.1)")
    p.add_argument("--clear", action="store_true", help="send all traffic to the current model again")
    p.add_argument("--force", action="store_true", help=force_help)
    return models_p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model-choice and lifecycle flags of `streamguard train` (folds, grid, report, device)."""
    parser.add_argument(
        "--grid",
        action="store_true",
        help="choose max_depth {4,6,8} x eta {0.05,0.1} x min_child_weight {1,5}, then the class-imbalance "
        "handling (none, sqrt, balanced fraud weights), by protocol average precision on the validation "
        "folds (early stopping on each), then refit the best on the train window",
    )
    parser.add_argument(
        "--trees",
        type=_positive_int,
        default=None,
        help="fixed boosting rounds, no validation folds (default: early stopping on the folds picks them)",
    )
    parser.add_argument(
        "--folds",
        type=_positive_int,
        default=2,
        help="prequential validation folds before the test window, each fit window + delay gap + "
        "validation window (default 2; needs that much history before the train window)",
    )
    parser.add_argument(
        "--validation-days",
        type=_positive_int,
        default=None,
        help="length of each fold's validation window (default: --test-days)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="write the report here (default: <registry>/<version>/report, or "
        "<state_dir>/reports/... with --no-register)",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="skip the report (metrics, curves, importance)"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="train on: auto (CUDA when CuPy and a GPU are present), cpu, or gpu (default auto)",
    )
