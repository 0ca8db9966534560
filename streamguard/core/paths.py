"""Where the repository's folders are, for code that runs from a checkout or the image's /app.

Modules find `sql/`, `k8s/` and the flows' working directory from here, so that moving a module between
rooms never changes which folder it reads.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout (or /app in the image): it holds flows/, models/, sql/, k8s/ next to streamguard/."""
SQL_DIR = REPO_ROOT / "sql"
"""The SQL layer's files, layer by layer (streamguard/sql/apply.py)."""
K8S_DIR = REPO_ROOT / "k8s"
"""The Kubernetes manifests (streamguard/deploy/manifests); used from a checkout, not from the image."""
