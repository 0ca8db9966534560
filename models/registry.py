"""Store model versions on disk in XGBoost's own format and name the one that is current.

Layout under the registry root:

    <root>/v0001/model.ubj        the booster, `Booster.save_model` UBJ (never pickle: loading runs no code)
    <root>/v0001/metadata.json    version, created_at, feature_names, sha256 of model.ubj, parent, ...
    <root>/CURRENT                the current version's name, replaced atomically
    <root>/promotions.jsonl       one line per promotion: what became current, when, and what it replaced

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


class ModelIntegrityError(RuntimeError):
    """A stored model file does not match the sha256 recorded when it was registered."""


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

    def promote(self, version: str) -> ModelVersion:
        """Make `version` current (atomically) and append the change to the promotion history."""
        target = self.get(version)
        previous = self.current()
        _write_atomically(self.root / CURRENT_FILE, version + "\n")
        record = {
            "version": version,
            "previous": previous.version if previous else None,
            "promoted_at": datetime.now(timezone.utc).isoformat(),
        }
        # One short O_APPEND write per line: concurrent promoters interleave whole lines, never bytes.
        with open(self.root / PROMOTIONS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return target

    # -- loading ------------------------------------------------------------------------------------------
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
        raw = mv.model_file.read_bytes()
        actual = hashlib.sha256(raw).hexdigest()
        expected = mv.metadata.get("sha256")
        if actual != expected:
            raise ModelIntegrityError(
                f"{mv.model_file}: sha256 is {actual}, but metadata.json records {expected}; "
                "the model file was changed or corrupted after registration"
            )
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
