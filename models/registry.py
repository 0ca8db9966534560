"""Store model versions on disk in XGBoost's own format and name the one that is current.

Layout under the registry root:

    <root>/v0001/model.ubj        the booster, `Booster.save_model` UBJ (never pickle: loading runs no code)
    <root>/v0001/metadata.json    version, created_at, feature_names, sha256 of model.ubj, parent, ...
    <root>/CURRENT                the current version's name, replaced atomically
    <root>/SHADOW                 optional: a challenger the flow scores alongside, never acting on it
    <root>/CANARY                 optional: {"version": ..., "share": ...}, a share of traffic it acts on
    <root>/promotions.jsonl       one line per promotion or rollback: what became current, when, and what
                                  it replaced; `rollback` undoes promotions in reverse order from it

Every pointer file (CURRENT, SHADOW, CANARY) is replaced with a rename, so a flow polling it reads the old
name or the new one, never half of either. A version is checked against its sha256 before it is named in
any of them, and, when the caller says which features it serves, against that feature list too.

A version folder is claimed with `os.mkdir`, which fails for all but one of several racing processes, so two
trainers never share a number. `metadata.json` is written last (atomically), so a version without it is
unfinished (or was abandoned by a crash) and is invisible to `list`, `promote` and `load`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import xgboost as xgb

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"
SHADOW_FILE = "SHADOW"
CANARY_FILE = "CANARY"
PROMOTIONS_FILE = "promotions.jsonl"
RESERVED_KEYS = ("version", "created_at", "sha256", "parent", "xgboost_version")
"""Metadata keys the registry writes itself; a caller passing one is an error."""

_VERSION_RE = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class ModelVersion:
    """One registered model: its name, its folder and its metadata.json."""

    version: str
    path: Path
    metadata: dict

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["feature_names"])


@dataclass(frozen=True)
class Canary:
    """A version that acts on `share` (0 < share <= 1) of the traffic instead of the current one."""

    version: ModelVersion
    share: float


@dataclass(frozen=True)
class Assignments:
    """The names in CURRENT, SHADOW and CANARY at one read: cheap to poll, no metadata parsed."""

    current: str | None
    shadow: str | None
    canary: str | None
    canary_share: float


class ModelIntegrityError(RuntimeError):
    """A stored model file does not match the sha256 recorded when it was registered."""


class FeatureMismatchError(ValueError):
    """A model's feature names or their order differ from the features the caller serves."""


def check_feature_names(version: ModelVersion, expected: Sequence[str]) -> None:
    """Raise FeatureMismatchError, saying what is missing, extra or reordered, unless the lists are equal."""
    actual, expected = version.feature_names, tuple(expected)
    if actual == expected:
        return
    missing = [n for n in expected if n not in actual]
    extra = [n for n in actual if n not in expected]
    parts = [f"missing {missing}" if missing else "", f"unknown {extra}" if extra else ""]
    detail = "; ".join(p for p in parts if p) or "same names in another order"
    raise FeatureMismatchError(
        f"model {version.version} was trained on {len(actual)} features that do not match the "
        f"{len(expected)} served ({detail}); expected {list(expected)}"
    )


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json_default(value: object) -> object:
    # Callers pass training windows, numpy scalars and paths; store them as their plain JSON form.
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to a unique temp file beside `path`, flush it to disk, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Registry:
    """A folder of model versions, one of which `CURRENT` names."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- reading ------------------------------------------------------------------------------------------
    def _version_numbers(self) -> builtins.list[tuple[int, str]]:
        """Return (number, name) of every version folder, finished or not, in number order."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            m = _VERSION_RE.match(entry.name)
            if m and entry.is_dir():
                found.append((int(m.group(1)), entry.name))
        return sorted(found)

    def get(self, version: str) -> ModelVersion:
        """Return a registered version; KeyError if it does not exist or is unfinished."""
        if not _VERSION_RE.match(version):
            raise KeyError(f"{version!r} is not a version name (expected v0001, v0002, ...)")
        path = self.root / version
        try:
            metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyError(f"no registered model version {version!r} in {self.root}") from None
        return ModelVersion(version=version, path=path, metadata=metadata)

    def list(self) -> builtins.list[ModelVersion]:
        """Return every finished version, oldest first."""
        out = []
        for _, name in self._version_numbers():
            try:
                out.append(self.get(name))
            except KeyError:
                continue  # being registered right now, or abandoned by a crash
        return out

    def current(self) -> ModelVersion | None:
        """Return the version `<root>/CURRENT` names, or None when nothing was promoted yet."""
        try:
            name = (self.root / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return self.get(name)

    def promotions(self) -> builtins.list[dict]:
        """Return the promotion history, oldest first: {version, previous, promoted_at} per promotion."""
        try:
            lines = (self.root / PROMOTIONS_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    # -- writing ------------------------------------------------------------------------------------------
    def _claim_next_version(self) -> tuple[str, Path]:
        """Create the next free version folder; mkdir is atomic, so a racing process takes another number."""
        self.root.mkdir(parents=True, exist_ok=True)
        numbers = self._version_numbers()
        n = numbers[-1][0] + 1 if numbers else 1
        while True:
            name = f"v{n:04d}"
            path = self.root / name
            try:
                os.mkdir(path)
                return name, path
            except FileExistsError:
                n += 1

    def register(self, booster: xgb.Booster, metadata: dict, *, promote: bool = True) -> ModelVersion:
        """Store `booster` as the next version with `metadata`, and make it current unless `promote=False`.

        `metadata["feature_names"]` (ordered) is required unless the booster carries feature names; when
        both are present they must agree. `parent` records the version that was current at registration.
        """
        clash = [k for k in RESERVED_KEYS if k in metadata]
        if clash:
            raise ValueError(f"metadata keys {clash} are written by the registry; do not pass them")
        feature_names = _resolve_feature_names(booster, metadata.get("feature_names"))
        # Serialise before claiming a folder, so bad metadata leaves no trace.
        json.dumps(metadata, default=_json_default)

        parent = self.current()
        version, path = self._claim_next_version()
        model_path = path / MODEL_FILE
        booster.save_model(str(model_path))
        full = {
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "parent": parent.version if parent else None,
            "xgboost_version": xgb.__version__,
            "sha256": sha256_file(model_path),
            **metadata,
            "feature_names": list(feature_names),
        }
        _write_atomically(path / METADATA_FILE, json.dumps(full, indent=2, default=_json_default) + "\n")
        if promote:
            return self.promote(version)
        return self.get(version)

    def promote(self, version: str, *, expected_features: Sequence[str] | None = None) -> ModelVersion:
        """Make `version` current (atomically) and append the change to the promotion history.

        The model file is checked against its sha256 first and, with `expected_features`, its feature
        list too (FeatureMismatchError). A SHADOW or CANARY naming the promoted version is cleared: the
        trial is over once the version is current.
        """
        target = self._checked(version, expected_features)
        previous = self.current()
        _write_atomically(self.root / CURRENT_FILE, version + "\n")
        self._append_history(version, previous, "promote")
        if self._read_pointer(SHADOW_FILE) == version:
            self.clear_shadow()
        canary = self._read_canary()
        if canary is not None and canary[0] == version:
            self.clear_canary()
        return target

    def rollback(self, *, expected_features: Sequence[str] | None = None) -> ModelVersion:
        """Make current again the version the last promotion replaced, undoing promotions one at a time.

        Successive rollbacks walk back through the history (v3 -> v2 -> v1), they do not toggle. Raises
        LookupError when nothing is current or nothing was current before it.
        """
        current = self.current()
        if current is None:
            raise LookupError(f"model registry {self.root} has no current version: nothing to roll back")
        stack = self._promotion_stack()
        if not stack or stack[-1] != current.version:
            stack.append(current.version)  # CURRENT was set outside promote(): it is still the truth
        if len(stack) < 2:
            raise LookupError(
                f"nothing to roll back to: {current.version} is the only version ever promoted in {self.root}"
            )
        target = self._checked(stack[-2], expected_features)
        _write_atomically(self.root / CURRENT_FILE, target.version + "\n")
        self._append_history(target.version, current, "rollback")
        return target

    def _promotion_stack(self) -> builtins.list[str]:
        """Replay the history: a promotion pushes its version, a rollback pops back to the one below."""
        stack: builtins.list[str] = []
        for record in self.promotions():
            if record.get("action") == "rollback" and stack:
                stack.pop()
            if not stack or stack[-1] != record["version"]:
                stack.append(record["version"])
        return stack

    def _append_history(self, version: str, previous: ModelVersion | None, action: str) -> None:
        record = {
            "version": version,
            "previous": previous.version if previous else None,
            "promoted_at": datetime.now(timezone.utc).isoformat(),
            "action": action,
        }
        # One short O_APPEND write per line: concurrent promoters interleave whole lines, never bytes.
        with open(self.root / PROMOTIONS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _checked(self, version: str, expected_features: Sequence[str] | None) -> ModelVersion:
        mv = self.verify(version)
        if expected_features is not None:
            check_feature_names(mv, expected_features)
        return mv

    # -- shadow and canary --------------------------------------------------------------------------------
    def _read_pointer(self, name: str) -> str | None:
        try:
            text = (self.root / name).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def _read_canary(self) -> tuple[str, float] | None:
        text = self._read_pointer(CANARY_FILE)
        if text is None:
            return None
        record = json.loads(text)
        return record["version"], float(record["share"])

    def shadow(self) -> ModelVersion | None:
        """Return the version SHADOW names (scored alongside the current one, never acted on), or None."""
        name = self._read_pointer(SHADOW_FILE)
        return None if name is None else self.get(name)

    def canary(self) -> Canary | None:
        """Return the canary version and its traffic share, or None when there is no canary."""
        record = self._read_canary()
        return None if record is None else Canary(self.get(record[0]), record[1])

    def assignments(self) -> Assignments:
        """Return what CURRENT, SHADOW and CANARY name right now (no metadata read, no checks)."""
        canary = self._read_canary()
        return Assignments(
            current=self._read_pointer(CURRENT_FILE),
            shadow=self._read_pointer(SHADOW_FILE),
            canary=canary[0] if canary else None,
            canary_share=canary[1] if canary else 0.0,
        )

    def set_shadow(self, version: str, *, expected_features: Sequence[str] | None = None) -> ModelVersion:
        """Name `version` the shadow model (atomically), after the same checks as `promote`."""
        target = self._checked(version, expected_features)
        self._refuse_current(version, "shadow")
        _write_atomically(self.root / SHADOW_FILE, version + "\n")
        return target

    def set_canary(
        self, version: str, share: float, *, expected_features: Sequence[str] | None = None
    ) -> Canary:
        """Route `share` (0 < share <= 1) of traffic to `version` (atomically), after `promote`'s checks."""
        if not 0.0 < share <= 1.0:
            raise ValueError(f"canary share must be in (0, 1], got {share}")
        target = self._checked(version, expected_features)
        self._refuse_current(version, "canary")
        record = {"version": version, "share": share}
        _write_atomically(self.root / CANARY_FILE, json.dumps(record) + "\n")
        return Canary(target, share)

    def _refuse_current(self, version: str, role: str) -> None:
        if self._read_pointer(CURRENT_FILE) == version:
            raise ValueError(f"{version} is the current model already; a {role} must be another version")

    def clear_shadow(self) -> None:
        """Stop shadow scoring; a no-op when there is no shadow."""
        (self.root / SHADOW_FILE).unlink(missing_ok=True)

    def clear_canary(self) -> None:
        """Send all traffic to the current model again; a no-op when there is no canary."""
        (self.root / CANARY_FILE).unlink(missing_ok=True)

    # -- loading ------------------------------------------------------------------------------------------
    def _verified_bytes(self, mv: ModelVersion) -> bytes:
        raw = mv.model_file.read_bytes()
        actual = hashlib.sha256(raw).hexdigest()
        expected = mv.metadata.get("sha256")
        if actual != expected:
            raise ModelIntegrityError(
                f"{mv.model_file}: sha256 is {actual}, but metadata.json records {expected}; "
                "the model file was changed or corrupted after registration"
            )
        return raw

    def verify(self, version: str) -> ModelVersion:
        """Return the version after checking its model file's sha256 (ModelIntegrityError if it differs)."""
        mv = self.get(version)
        self._verified_bytes(mv)
        return mv

    def load(self, version: str | None = None) -> tuple[xgb.Booster, ModelVersion]:
        """Load a version's booster (None = current) after checking its sha256.

        The bytes are read once and both hashed and parsed, so what is verified is what is loaded.
        Raises LookupError when `version` is None and nothing is current, KeyError for an unknown
        version, and ModelIntegrityError when model.ubj does not match its recorded sha256.
        """
        if version is None:
            mv = self.current()
            if mv is None:
                raise LookupError(f"model registry {self.root} has no current version (nothing promoted)")
        else:
            mv = self.get(version)
        raw = self._verified_bytes(mv)
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster, mv


def _resolve_feature_names(booster: xgb.Booster, given: Sequence[str] | None) -> tuple[str, ...]:
    from_booster = tuple(booster.feature_names) if booster.feature_names else None
    from_caller = tuple(given) if given is not None else None
    if from_booster and from_caller and from_booster != from_caller:
        raise ValueError(
            f"metadata feature_names {list(from_caller)} differ from the booster's {list(from_booster)}"
        )
    names = from_caller or from_booster
    if not names:
        raise ValueError("feature_names unknown: pass metadata['feature_names'] or a booster that has them")
    if len(names) != booster.num_features():
        raise ValueError(f"{len(names)} feature_names for a booster with {booster.num_features()} features")
    return names
