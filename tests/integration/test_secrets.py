"""A password in STREAMGUARD_SQL_URL reaches PostgreSQL and nothing else: no process's command line and no
log file or output of the run holds it.

A role of its own logs in with scram-sha-256 (one pg_hba line for it alone, removed after), so a password
that did not arrive would fail the commands here rather than pass unseen.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from pipeline_harness import running_flows
from pydantic import SecretStr

from streamguard.core.topics import ensure_topics
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import settings_env
from streamguard.sql.shell import split_password

pytestmark = pytest.mark.integration


@pytest.fixture
def secret_role(local_stack):
    role = f"sg_secret_{uuid.uuid4().hex[:8]}"
    password = "pw:" + secrets.token_urlsafe(16)  # a ':' too: the pass file must escape it
    hba = local_stack.state_dir / "postgres" / "data" / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(local_stack.sql_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT CREATE, CONNECT ON DATABASE streamguard TO {role}")
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield role, password
    finally:
        hba.write_text(original)
        with psycopg.connect(local_stack.sql_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP OWNED BY {role} CASCADE")
            conn.execute(f"DROP ROLE {role}")


class ProcessWatch:
    """Read every process's command line (as `ps -eo args` does) until stopped; keep the lines seen."""

    def __init__(self) -> None:
        self.lines: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
            self.lines.update(out.splitlines())
            time.sleep(0.05)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_sql_password_never_shows_in_process_listings_or_logs(sg_settings, secret_role):
    role, password = secret_role
    port = sg_settings.local_pg_port
    settings = sg_settings.model_copy(
        update={
            "sql_url": SecretStr(
                f"postgresql://{role}:{password.replace(':', '%3A')}@127.0.0.1:{port}/streamguard"
            )
        }
    )
    assert password not in repr(settings) and password not in str(settings.redacted())
    dsn, found = split_password(settings.sql_dsn())
    assert found == password and password not in dsn

    outputs = settings.state_dir / "outputs"
    outputs.mkdir(parents=True)
    env = {**os.environ, **settings_env(settings)}

    def cli(name: str, *args: str) -> int:
        with open(outputs / f"{name}.log", "wb") as out:
            return subprocess.run(
                [sys.executable, "-m", "streamguard.cli", "-v", *args],
                env=env,
                stdout=out,
                stderr=out,
                check=False,
            ).returncode

    txns, labels = simulate(SimulationConfig(days=8, customers=20, terminals=40, seed=2))
    with ProcessWatch() as watch:
        assert cli("apply", "sql", "apply") == 0
        ensure_topics(settings)
        with running_flows(settings):
            replay(settings, txns, labels, progress=False)
            assert cli("shell", "sql", "shell", "-c", "SELECT current_user") == 0
            assert cli("status", "status") in (0, 1)
            time.sleep(3)
        wrong = {**env, "STREAMGUARD_SQL_URL": env["STREAMGUARD_SQL_URL"].replace("%3A", "%3Awrong")}
        with open(outputs / "wrong.log", "wb") as out:  # a refused password: the error names no password
            failed = subprocess.run(
                [sys.executable, "-m", "streamguard.cli", "sql", "shell", "-c", "SELECT 1"],
                env=wrong,
                stdout=out,
                stderr=out,
                check=False,
            )
        assert failed.returncode != 0

    assert role in (outputs / "shell.log").read_text(), "psql did not log in with the password"
    assert "password authentication failed" in (outputs / "wrong.log").read_text()
    assert any("psql" in line for line in watch.lines), "the process watch never saw psql"
    leaked = [line for line in watch.lines if password in line]
    assert not leaked, f"the password is on a command line: {leaked[:1]}"
    files = [p for p in settings.state_dir.rglob("*") if p.is_file() and p.suffix in (".log", ".txt", "")]
    assert any(p.name == "fraud.log" for p in files)
    for path in files:
        assert password.encode() not in path.read_bytes(), f"the password is in {path}"
