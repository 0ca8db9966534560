"""Run psql on the SQL store without putting its password where others can read it.

The connection string may carry a password (STREAMGUARD_SQL_URL). Anything on a command line is visible
to every user (`ps -eo args`), so psql gets the connection string without it, and the password through a
pass file (`PGPASSFILE`) that only the current user can read (0600, in a private temporary folder),
deleted as soon as psql exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from streamguard.core.settings import Settings


def psql_path() -> str:
    """Return the psql to run: the one on PATH, else the one the pgserver wheel bundles with its server."""
    found = shutil.which("psql")
    if found is not None:
        return found
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def split_password(dsn: str) -> tuple[str, str | None]:
    """Return (the connection string without its password, the password or None)."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return make_conninfo(**params), password


def run_psql(settings: Settings, command: str | None = None) -> int:
    """Run psql on the store (schema first on the search path, UTC); return its exit status."""
    dsn, password = split_password(settings.sql_dsn())
    env = {
        **os.environ,
        # The schema first on the search path, so `SELECT * FROM decisions` just works; UTC like the flows.
        "PGOPTIONS": f"-c search_path={settings.sql_schema},public -c TimeZone=UTC",
    }
    env.pop("PGPASSWORD", None)
    args = [psql_path(), dsn, *(["-c", command] if command else [])]
    with tempfile.TemporaryDirectory(prefix="streamguard-psql-") as folder:  # 0700
        if password is not None:
            passfile = Path(folder) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"*:*:*:*:{_pgpass_field(password)}\n")
            env["PGPASSFILE"] = str(passfile)
        # Ctrl-C belongs to psql (it cancels the running query); this process only waits for it.
        previous = signal.signal(signal.SIGINT, lambda *_: None)
        try:
            return subprocess.call(args, env=env)
        finally:
            signal.signal(signal.SIGINT, previous)
