"""A throwaway PostgreSQL server on loopback for tests (Debian's `postgresql` binaries).

`start_postgres()` runs `initdb` into a fresh temporary folder, starts `postgres` on a free
127.0.0.1 port with password auth, and always stops it (and deletes the folder) on exit. When the
test process is root the server runs as an unprivileged user (`postgres`, else `nobody`): the
server refuses to run as root.

The shell equivalent (what docs/operations.md shows):

    initdb -D $PGDATA -U food --auth=scram-sha-256 --pwfile=pw --no-locale -E UTF8
    pg_ctl -D $PGDATA -l $PGDATA/log -w -t 60 -o "-h 127.0.0.1 -p $PORT -k $PGDATA -F" start
    createdb -h 127.0.0.1 -p $PORT -U food dagster; createdb ... mlflow
    pg_ctl -D $PGDATA -m fast -w -t 20 stop
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "food"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql "
    "(`apt-get install -y postgresql`, done by `make setup` when root) or put them on PATH"
)


def find_pg_bin() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: PATH first, then the newest Debian install."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` account exists")


@dataclass
class PgServer:
    """A running server; `url(db)` gives a SQLAlchemy/psycopg2 URL for one database."""

    bin_dir: Path
    root: Path
    port: int
    user: str
    password: str
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, db: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def env(self, db: str) -> dict[str, str]:
        """The `DAGSTER_PG_*` variables configs/team/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db,
        }

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"), connect_timeout=10)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "server.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )


def _subprocess_kwargs(account: pwd.struct_passwd | None) -> dict:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _stop(server: PgServer, account: pwd.struct_passwd | None) -> None:
    """Fast shutdown, bounded; if pg_ctl cannot do it, SIGKILL the postmaster we started."""
    pid_file = server.data_dir / "postmaster.pid"
    try:
        subprocess.run(
            [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w",
             "-t", "20", "stop"],
            check=True, capture_output=True, timeout=30, **_subprocess_kwargs(account),
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def start_postgres(*, timeout_s: float = 60.0, attempts: int = 3) -> Iterator[PgServer]:
    """Start a private server, yield it, stop it and delete its files whatever happens.

    Raises:
        FileNotFoundError: no PostgreSQL binaries (the message says how to install them).
        RuntimeError: the server did not come up within `timeout_s` (with the server log).
    """
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError(INSTALL_HINT)
    account = _run_as()
    # Not under pytest's tmp_path: that is root-only (0700), and the server user must reach it.
    root = Path(tempfile.mkdtemp(prefix="food_assets_pg_"))
    password = secrets.token_hex(12)
    server: PgServer | None = None
    try:
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if account is not None:
            for p in (root, pwfile):
                os.chown(p, account.pw_uid, account.pw_gid)
        kw = _subprocess_kwargs(account)
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", PG_USER,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-locale", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True, timeout=timeout_s, **kw,
        )  # fmt: skip
        last_error = ""
        for _ in range(attempts):  # a free port can be taken between probe and bind: retry
            port = _free_port()
            server = PgServer(bin_dir, root, port, PG_USER, password)
            # -F: no fsync (a throwaway server); -k: the Unix socket stays in our folder.
            opts = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=60"
            proc = subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l",
                 str(root / "server.log"), "-w", "-t", str(int(timeout_s)), "-o", opts, "start"],
                capture_output=True, text=True, timeout=timeout_s + 10, **kw,
            )  # fmt: skip
            if proc.returncode == 0 and _wait_ready(server, deadline=time.monotonic() + timeout_s):
                break
            last_error = f"{proc.stdout}\n{proc.stderr}\n{server.log_tail()}"
            _stop(server, account)
        else:
            raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:\n{last_error}")
        yield server
    finally:
        if server is not None:
            _stop(server, account)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PgServer, *, deadline: float) -> bool:
    import psycopg2

    while time.monotonic() < deadline:
        try:
            psycopg2.connect(server.url("postgres"), connect_timeout=3).close()
            return True
        except psycopg2.OperationalError:
            time.sleep(0.2)
    return False
