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

The ways the server refuses work, for the refusal tests and the mixed soak: ``limit_connections()``
/ ``unlimit_connections()`` (the role may open no more sessions, its open ones ended),
:class:`PreparedSlots` (every ``max_prepared_transactions`` slot taken by other sessions),
:func:`small_tablespace` (the role's tables on a small tmpfs; needs root, else
:class:`Unavailable` says why) and :func:`fill` (a file that takes its last free byte).
"""
from __future__ import annotations

import contextlib
import getpass
import glob
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

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

    def limit_connections(self) -> None:
        """The role may open no more sessions (its open ones ended, as when other clients hold every slot)."""
        with self.admin() as conn:
            conn.execute("ALTER ROLE batchray CONNECTION LIMIT 0")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'batchray'")

    def unlimit_connections(self) -> None:
        with self.admin() as conn:
            conn.execute("ALTER ROLE batchray CONNECTION LIMIT -1")

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", self.env["BATCHRAY_TEST_PG_DATA"]], capture_output=True,
                       timeout=120, cwd=str(REPO))


class PreparedSlots:
    """Every ``max_prepared_transactions`` slot taken by other sessions' prepared transactions."""

    def __init__(self, server: OwnServer) -> None:
        self.server = server
        self.holders: list = []

    def take(self) -> None:
        with self.server.admin() as conn:
            slots = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
        for k in range(slots):  # batchray's own prepared transactions may hold a few already
            holder = self.server.admin()
            self.holders.append(holder)
            holder.execute("BEGIN")
            holder.execute("SELECT 1")
            try:
                holder.execute(f"PREPARE TRANSACTION 'other-work-{k}'")
            except self.server.psycopg.errors.OutOfMemory:  # "maximum number ... reached": all taken
                break

    def give_back(self) -> None:
        with self.server.admin() as conn:
            for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'other-work-%'").fetchall():
                conn.execute(f"ROLLBACK PREPARED '{gid}'")
        for holder in self.holders:
            holder.close()
        self.holders.clear()


class Unavailable(Exception):
    """A fault this machine cannot inject; the message says why."""


@contextlib.contextmanager
def small_tablespace(server: OwnServer, megabytes: int) -> Iterator[Path]:
    """A tablespace ``small`` on a tmpfs of ``megabytes`` owned by the server's user, the role's
    default (tables created from now on live there); yields the mount point. Raises
    :class:`Unavailable` unless run as root with a ``mount`` that works."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise Unavailable("mounting a tmpfs for a tablespace needs root (CI runs as root)")
    mount = Path(server.env["BATCHRAY_TEST_PG_DATA"]).parent / "small"
    mount.mkdir()
    owner = server.env.get("BATCHRAY_TEST_PG_OS_USER") or "root"
    import pwd

    uid = pwd.getpwnam(owner).pw_uid
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700,uid={uid}", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        with server.admin() as conn:
            conn.execute(f"CREATE TABLESPACE small LOCATION '{mount}'")
            conn.execute("GRANT CREATE ON TABLESPACE small TO batchray")
            conn.execute("ALTER ROLE batchray SET default_tablespace = 'small'")
        yield mount
    finally:
        with contextlib.suppress(Exception):  # a server already stopped needs no reset
            with server.admin() as conn:
                conn.execute("ALTER ROLE batchray RESET default_tablespace")
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path) -> Path:
    """A file that takes every free byte of ``mount``."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: nothing left to write at close
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
    return filler
