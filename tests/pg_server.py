"""A PostgreSQL server of a test's own, for tests that crash it, restart it or change its
settings (never the shared test server of ``BATCHRAY_TEST_PG_DSN``).

:func:`server_binaries` finds the server's binaries the way ``.ci/postgres.sh`` does (or
returns None: the caller skips). :class:`OwnServer` runs ``.ci/postgres.sh start`` (a temporary
folder of its own), reads the ``export`` lines it prints, and offers what the fault tests need:
``url(schema)`` (a store URL), ``admin()`` (a superuser connection over the Unix socket, in the stores'
database),
``crash()`` (``pg_ctl stop -m immediate``: the server dies as on a power cut; prepared
transactions are on disk), ``start()``, ``prepared()`` (the global ids in
``pg_prepared_xacts``), ``set_system(name, value)`` (``ALTER SYSTEM`` and a reload, which every
session sees) and ``stop()`` (``.ci/postgres.sh stop``, which removes the folder).
"""
from __future__ import annotations

import getpass
import glob
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "postgres.sh"


def server_binaries() -> Optional[str]:
    """The folder holding pg_ctl, initdb and postgres, or None."""
    candidates = [os.environ.get("BATCHRAY_TEST_PG_BIN")]
    exe = shutil.which("pg_ctl")
    if exe:
        candidates.append(os.path.dirname(os.path.realpath(exe)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and all(os.access(os.path.join(folder, name), os.X_OK) for name in ("pg_ctl", "initdb", "postgres")):
            return folder
    return None


class OwnServer:
    """A throwaway server; see the module docstring."""

    def __init__(self) -> None:
        import psycopg

        self.psycopg = psycopg
        # the script makes a temporary folder of its own (under $TMPDIR, which the server's
        # owner, ``postgres`` when run as root, can reach), and ``stop`` removes it
        env = {**os.environ, "BATCHRAY_TEST_PG_BIN": server_binaries() or ""}
        env.pop("BATCHRAY_TEST_PG_DATA", None)
        done = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env,
                              timeout=180, cwd=str(REPO))
        if done.returncode != 0:
            raise RuntimeError(f"postgres.sh start failed: {done.stderr[-2000:]}")
        self.env: dict[str, str] = {}
        for line in done.stdout.splitlines():
            if line.startswith("export "):
                name, _, value = line[len("export "):].partition("=")
                self.env[name] = shlex.split(value)[0] if value else ""
        self.dsn = self.env["BATCHRAY_TEST_PG_DSN"]
        self.admin_dsn = self.env["BATCHRAY_TEST_PG_ADMIN_DSN"]
        self.dbname = psycopg.conninfo.conninfo_to_dict(self.dsn)["dbname"]

    def url(self, schema: str) -> str:
        return f"{self.dsn}{'&' if '?' in self.dsn else '?'}schema={schema}"

    def admin(self):
        """The superuser, in the stores' database."""
        return self.psycopg.connect(self.admin_dsn, dbname=self.dbname, autocommit=True, connect_timeout=10)

    def _pg_ctl(self, *args: str) -> None:
        command = [f"{self.env['BATCHRAY_TEST_PG_BIN']}/pg_ctl", "-D", self.env["BATCHRAY_TEST_PG_DATA"], *args]
        owner = self.env.get("BATCHRAY_TEST_PG_OS_USER")
        if owner and owner != getpass.getuser():
            command = ["runuser", "-u", owner, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd="/")

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every backend ends at once, no checkpoint."""
        self._pg_ctl("-w", "stop", "-m", "immediate")

    def start(self, wait: float = 60.0) -> None:
        self._pg_ctl("-l", self.env["BATCHRAY_TEST_PG_LOG"], "-w", "start")
        deadline = time.monotonic() + wait
        while True:
            try:
                self.psycopg.connect(self.admin_dsn, connect_timeout=5).close()
                return
            except self.psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def prepared(self) -> list[str]:
        with self.admin() as conn:
            return [gid for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts ORDER BY gid")]

    def set_system(self, name: str, value: Optional[str]) -> None:
        """``ALTER SYSTEM SET name = value`` (``None``: ``RESET``) and a reload: every session
        takes it at its next command. ``name`` is the test's own constant."""
        with self.admin() as conn:
            if value is None:
                conn.execute(f"ALTER SYSTEM RESET {name}")
            else:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the postmaster signals every backend

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", self.env["BATCHRAY_TEST_PG_DATA"]], capture_output=True,
                       timeout=120, cwd=str(REPO))
