"""PostgreSQL plumbing shared by the state store and the audit log: recognising a database URL
(the one place that does), hiding its password, a connection pool whose failures become the
caller's typed error, and schema migrations under an advisory lock.

psycopg 3 and psycopg_pool come with the `postgres` extra; they are imported only when a
PostgreSQL URL is opened, so the embedded SQLite default needs neither.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ProtectionRulesError, UsageError
from .probing import PROBE_TIMEOUT, probe_result

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 10  # seconds libpq waits for a server before giving up (fail fast: a deny)
POOL_TIMEOUT = 10.0  # seconds a call waits for a pooled connection before it fails
POOL_SIZE = 8
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def database_url(target: str | Path | None) -> str | None:
    """The PostgreSQL URL `target` is, or None for a file path; UsageError for another scheme.

    Every way in (the CLI's --state/--audit and their environment variables, `open_state`,
    `open_audit`, `Engine(state=..., audit=...)`) asks this function, and only this one.
    """
    if target is None or isinstance(target, Path):
        return None
    match = _URL.match(str(target))
    if match is None:
        return None
    if match.group(1).lower() not in SCHEMES:
        raise UsageError(f"`{redact(str(target))}`: unsupported URL scheme `{match.group(1)}` (use postgresql://...)")
    return str(target)


def redact(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced by `***`; a file path
    is returned as it is."""
    if not _URL.match(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user:
            netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(url: str) -> list[str]:
    found = re.findall(r"^[^:]+://[^:/@?]*:([^@]*)@", url)  # what urlsplit cannot parse has one too
    try:
        found.append(urlsplit(url).password or "")
    except ValueError:
        pass
    found += re.findall(r"(?i)(?:^|[?&])password=([^&]*)", url)
    return [secret for secret in found if secret]


class Database:
    """A pool of connections to one PostgreSQL database; every failure is raised as `error`
    (StateError or AuditError) naming the URL without its password.

    Opening connects once directly, so a server that is down or refuses is reported at once
    rather than after the pool's timeout, and runs `prepare` (the migrations) on that connection.
    """

    def __init__(
        self,
        url: str,
        *,
        error: type[ProtectionRulesError],
        prepare: Callable[[Any], None],
        prefix: str = "",
        pool_size: int = POOL_SIZE,
        timeout: float = POOL_TIMEOUT,
    ):
        self.url = redact(url)
        self._label = prefix + self.url
        self._raw = url
        self._error = error
        self._timeout = timeout
        self._pool: Any = None
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise error(
                f"{self._label}: PostgreSQL needs the `postgres` extra: pip install 'protection-rules[postgres]'"
            ) from None
        options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "protection-rules"}
        try:
            with psycopg.connect(url, **options) as conn:
                prepare(conn)
        except psycopg.Error as exc:
            raise self.failure(exc, "open") from None
        # `check` re-tests a pooled connection before handing it out: after a server restart
        # the pool replaces its dead connections instead of failing a call on each.
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=options,
            timeout=timeout,
            check=ConnectionPool.check_connection,
            open=False,
            name=f"protection-rules {self.url}",
        )
        self._pool.open(wait=False)

    @contextmanager
    def transaction(self, doing: str, *, wait: float | None = None) -> Iterator[Any]:
        """A connection in one transaction: committed at the end of the block, rolled back on
        any error; a database failure is raised as the typed error ("cannot `doing`"). `wait`
        (default: the pool's timeout) bounds the wait for a connection."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise self._error(f"{self._label}: closed")
        wait = self._timeout if wait is None else wait
        try:
            with self._pool.connection(timeout=wait) as conn, conn.transaction():
                yield conn
        except PoolTimeout:
            raise self._error(f"{self._label}: cannot {doing}: no connection to the database within {wait:g} s") from None
        except psycopg.Error as exc:
            raise self.failure(exc, doing) from None

    def probe(self, table: str, *, writable: bool, check: Callable[[Any], object] | None = None) -> dict[str, Any]:
        """Health (probing.py): reachable when a pooled connection (waited for at most
        PROBE_TIMEOUT) finds `table`; writable when the transaction may write (a hot standby's
        may not) and `check` passes; nothing is written."""
        import psycopg

        try:
            with self.transaction("read", wait=PROBE_TIMEOUT) as conn:
                (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if not exists:
                    return probe_result(False, False, f"{self._label}: the {table} table is gone")
                if not writable:
                    return probe_result(True, False, f"{self._label}: opened read-only")
                try:
                    with conn.transaction():  # a savepoint: a refusal leaves the probe's transaction usable
                        # a row lock needs a writable transaction and the UPDATE privilege; KEY SHARE
                        # locks of concurrent probes do not conflict
                        conn.execute(f"SELECT 1 FROM {table} LIMIT 1 FOR KEY SHARE")
                        if check is not None:
                            check(conn)
                except psycopg.Error as exc:
                    return probe_result(True, False, str(self.failure(exc, "write")))
                except ProtectionRulesError as exc:
                    return probe_result(True, False, str(exc))
        except ProtectionRulesError as exc:
            return probe_result(False, False, str(exc))
        return probe_result(True, True)

    def failure(self, exc: BaseException, doing: str) -> ProtectionRulesError:
        """The typed error for a database failure: one line, no password."""
        reason = " ".join(str(exc).split()).replace(self._raw, self.url) or type(exc).__name__
        for secret in _secrets(self._raw):
            reason = reason.replace(secret, "***")
        return self._error(f"{self._label}: cannot {doing}: {reason}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def migrate(
    conn: Any,
    *,
    table: str,
    migrations: Mapping[int, Sequence[str]],
    create: bool,
    fail: Callable[[str], ProtectionRulesError],
    applied_at: str | None = None,
) -> int | None:
    """Bring the schema whose versions are listed in `table` up to the last of `migrations`.

    One transaction under an advisory lock named after `table`, so processes opening a new
    database together migrate it once. Returns the version found before (None: no schema);
    with `create` False a missing schema is not created (`fail` says so) and nothing is written.
    """
    latest = max(migrations)
    with conn.transaction():
        if create:  # a read-only open takes no lock: it may be talking to a hot standby
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(table),))
        found = schema_version(conn, table, fail)
        if found is not None and found > latest:
            raise fail(f"schema version {found} is newer than this protection-rules supports ({latest})")
        if found == latest:
            return found
        if not create:
            raise fail(
                "no schema here (nothing was ever written)" if found is None else f"schema version {found} needs migrating"
            )
        if found is None:
            conn.execute(f"CREATE TABLE {table} (version INTEGER PRIMARY KEY, applied_at TEXT)")
        for step in range((found or 0) + 1, latest + 1):
            for statement in migrations[step]:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {table} (version, applied_at) VALUES (%s, %s)", (step, applied_at))
    return found


def schema_version(conn: Any, table: str, fail: Callable[[str], ProtectionRulesError]) -> int | None:
    """The version recorded in `table`; None when the table does not exist."""
    (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not exists:
        return None
    (version,) = conn.execute(f"SELECT MAX(version) FROM {table}").fetchone()
    if not isinstance(version, int):
        raise fail(f"the {table} table is empty")
    return version


def lock_key(name: str) -> int:
    """A stable 32-bit advisory lock key for a name (every process computes the same)."""
    return zlib.crc32(f"protection-rules:{name}".encode())
