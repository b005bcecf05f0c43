"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, listening only on a
unix socket in that folder, stopped and deleted at the end of the session (conftest.py's
`postgres_server` fixture).

Run as root (CI, this machine), the server runs as the `postgres` user (PostgreSQL refuses to
run as root). The binaries are looked up in `$PROTECT_PG_BINDIR` (only there, when it is set),
else the distribution's /usr/lib/postgresql/<version>/bin, then PATH and `pg_config --bindir`.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"
# A role that must log in with a password (scram), for the "refuses" tests; everyone else is trusted.
SECURED_ROLE, SECURED_PASSWORD = "secured", "s3cret-Passw0rd"


class Unavailable(Exception):
    """Why no server can be started here (the tests skip with it, or fail under PROTECT_REQUIRE_POSTGRES)."""


def find_bindir() -> Path:
    candidates = []
    if os.environ.get("PROTECT_PG_BINDIR"):  # when set, the only place looked at
        candidates.append(os.environ["PROTECT_PG_BINDIR"])
    else:
        candidates += _installed()
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    where = os.environ.get("PROTECT_PG_BINDIR") or "/usr/lib/postgresql/*/bin, PATH or pg_config --bindir"
    raise Unavailable(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}: install `postgresql`")


def _installed() -> list[str]:
    def version(path: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", Path(path).parent.name)]

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb") or "").parent))
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip())
    return candidates


class PostgresServer:
    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise Unavailable("psycopg is not installed: pip install '.[postgres]'") from None
        self.bindir = find_bindir()
        self._user: int | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam(SERVER_USER).pw_uid
            except KeyError:
                raise Unavailable(f"running as root, the server needs a `{SERVER_USER}` user to run as") from None
        self.folder = Path(tempfile.mkdtemp(prefix="protect-pg-"))  # short: a socket path has ~100 bytes
        self.data = self.folder / "data"
        self._names = itertools.count(1)
        self._started = False

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], cwd=self.folder, user=self._user, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}\n{tail}")

    def start(self) -> None:
        if self._user is not None:
            os.chown(self.folder, self._user, -1)
        self.folder.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = ''\nunix_socket_directories = '{self.folder}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
            )
        (self.data / "pg_hba.conf").write_text(f"local all {SECURED_ROLE} scram-sha-256\nlocal all all trust\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")
        self._started = True
        self.execute(f"CREATE ROLE {SECURED_ROLE} LOGIN PASSWORD '{SECURED_PASSWORD}'")

    def restart(self) -> None:
        """Stop at once (as a crash would) and start again: every open connection is cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", *, user: str = SERVER_USER, password: str | None = None) -> str:
        who = f"{user}:{password}" if password is not None else user
        return f"postgresql://{who}@/{database}?host={self.folder}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def new_database(self) -> str:
        """The URL of a new, empty database (one per test keeps the tests independent)."""
        name = f"t{next(self._names)}"
        self.execute(f"CREATE DATABASE {name}")
        return self.url(name)
