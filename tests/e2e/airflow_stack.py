"""What the end-to-end tests share: real Airflow components and the services under them, started
as a user would, waited for through their state (DB, HTTP, files), and torn down with their
whole process trees, checked dead.

- :class:`Components` starts Airflow CLI components (each in a session of its own, its output in
  ``<logs>/<name>.log``) and stops them with everything they started.
- :func:`wait_for` polls a state until it holds, failing fast if a component dies meanwhile.
- :class:`MetadataDB` reads the metadata DB (SQLite or Postgres) through SQLAlchemy.
- :func:`postgres_server` and :func:`redis_server` run Debian's Postgres (as a non-root user) and
  Redis on loopback ports of their own, in throw-away directories.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wait_for(
    what: str, check: Callable[[], Any], procs: Mapping[str, subprocess.Popen], timeout: float
) -> Any:
    """Poll ``check()`` (DB, HTTP or file state) until it is truthy; fail fast if a component dies."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode} while waiting for {what}")
        result = check()
        if result:
            # A timeline in the test's captured output: where a slow or failed run spent its time.
            print(f"{time.strftime('%H:%M:%S')} +{time.monotonic() - started:5.1f}s {what}")
            return result
        time.sleep(0.5)  # polling external state, not a guessed duration
    raise AssertionError(f"timed out waiting for {what}")


_DEFER_EXIT = re.compile(
    r"TaskInstance Finished: dag_id=(\S+), task_id=(\S+), run_id=(\S+), map_index=(-?\d+), "
    r".*?, state=deferred,"
)


def defer_exits_processed(scheduler_log: str) -> set[tuple[str, str, str, int]]:
    """``(dag_id, task_id, run_id, map_index)`` of deferred tasks whose worker exit the scheduler
    has taken note of (from its log).

    Release what a deferred task waits for only after this: Airflow 3.3's scheduler takes the exit's
    late "success" for the resumed attempt's and fails the task once that attempt is running
    (apache/airflow#72716, #71580).
    """
    return {(d, t, r, int(m)) for d, t, r, m in _DEFER_EXIT.findall(scheduler_log)}


def run_airflow(env: Mapping[str, str], *args: str, timeout: float = 240) -> str:
    """Run one Airflow CLI command to completion (``db migrate``, ``pools set`` ...); its stdout."""
    done = subprocess.run(
        [AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def trigger(env: Mapping[str, str], dag_id: str, conf: dict[str, Any]) -> None:
    """``airflow dags trigger`` with a run config, as a user would."""
    run_airflow(env, "dags", "trigger", dag_id, "--conf", json.dumps(conf), timeout=120)


def link_dags(folder: Path, files: list[Path]) -> None:
    """A DAGs folder of symlinks (the example DAGs find the project through ``__file__``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for dag_file in files:
        (folder / dag_file.name).symlink_to(dag_file)


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants alive now (empty if it is gone)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    return []


def _kill(members: list[psutil.Process]) -> None:
    """SIGKILL each of ``members`` still alive."""
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()


def _reap(tree: list[psutil.Process]) -> list[psutil.Process]:
    """Give ``tree`` 30 s to exit, SIGKILL what is left and give it 10 s more; returns the survivors."""
    _, alive = psutil.wait_procs(tree, timeout=30)
    _kill(alive)
    _, alive = psutil.wait_procs(alive, timeout=10)
    return alive


def stop_trees(procs: Mapping[str, subprocess.Popen]) -> None:
    """Stop every component and everything it started; fail if any process survives.

    Airflow 3 puts task runners and the trigger runner in process groups of their own, so killing
    the components' groups is not enough: the whole trees are collected first.
    """
    tree = [member for proc in procs.values() for member in process_tree(proc.pid)]
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    alive = _reap(tree)
    for proc in procs.values():
        proc.wait(timeout=10)
    assert not alive, f"processes survived the teardown: {alive}"


class Components:
    """Airflow CLI components started for one test: ``name -> Popen``, output in ``<logs>/<name>.log``."""

    def __init__(self, env: Mapping[str, str], logs: Path) -> None:
        self.env = dict(env)
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: dict[str, subprocess.Popen] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """``airflow <args>`` in a session of its own (signals to the test never reach it)."""
        with open(self.log(name), "ab") as out:
            proc = subprocess.Popen(
                [AIRFLOW, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        """The file a component's stdout and stderr go to."""
        return self.logs / f"{name}.log"

    def text(self, name: str) -> str:
        """What a component logged so far."""
        return self.log(name).read_text(errors="replace")

    def kill_tree(self, name: str) -> list[int]:
        """SIGKILL a component and every process it started, at once, as a lost machine would;
        it is then no longer watched by :func:`wait_for`. Returns the pids killed."""
        proc = self.procs.pop(name)
        tree = process_tree(proc.pid)
        _kill(tree)
        _, alive = psutil.wait_procs(tree, timeout=30)
        proc.wait(timeout=30)
        assert not alive, f"{name}: processes survived SIGKILL: {alive}"
        self.killed[name] = proc
        return [member.pid for member in tree]

    def stop(self) -> None:
        """Stop every component still running, with everything it started; fail if any survives."""
        stop_trees(self.procs)


class MetadataDB:
    """Read-only queries on an Airflow metadata DB (any SQLAlchemy URL: SQLite, Postgres)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # NullPool: no connection is kept open between polls (nothing to leak into teardown).
        self._engine = create_engine(url, poolclass=NullPool)

    def query(self, sql: str, **params: Any) -> list[tuple]:
        """Rows of ``sql`` (``:name`` placeholders)."""
        from sqlalchemy import text

        with self._engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]

    def close(self) -> None:
        """Release the engine."""
        self._engine.dispose()


class RestApi:
    """Airflow's public REST API (``/api/v2``) as a user's script calls it.

    The deployments run the simple auth manager with ``simple_auth_manager_all_admins``: every
    request is authenticated as an admin by the API server itself.
    """

    def __init__(self, base_url: str) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        self._session.trust_env = False  # loopback only, never through a proxy

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; fails the test (with the answer) on anything but 2xx."""
        resp = self._session.request(method, f"{self.base_url}/api/v2/{path}", json=body, timeout=120)
        if not resp.ok:
            raise AssertionError(f"{method} /api/v2/{path}: HTTP {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Trigger a run of ``dag_id`` with ``conf``; its run id."""
        run = self.call("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


# ---------------------------------------------------------------------------- services


class ServiceMissing(RuntimeError):
    """A service binary is not installed (``.ci/install-services.sh`` installs it)."""


def _pg_bin(name: str) -> str:
    """A Postgres server binary: Debian keeps them in ``/usr/lib/postgresql/<version>/bin``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise ServiceMissing(f"Postgres' {name} not found (apt-get install postgresql)")


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parents[1].name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)  # polling for a listener
    raise RuntimeError(f"{what}: nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


@contextlib.contextmanager
def _scratch_dir(prefix: str) -> Iterator[Path]:
    """A throw-away directory, removed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _listening(
    command: list[str], *, base: Path, port: int, what: str, stop: int, **popen: Any
) -> Iterator[subprocess.Popen]:
    """``command`` started in ``base`` (output to ``base/<what>.log``) and waited for until something
    listens on ``port``; stopped with signal ``stop`` after (its whole process tree checked)."""
    with open(base / f"{what}.log", "wb") as out:
        proc = subprocess.Popen(
            command, cwd=base, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
    try:
        _wait_port(port, proc, what)
        yield proc
    finally:
        _stop_service(proc, stop, what)


def _stop_service(proc: subprocess.Popen, sig: int, what: str) -> None:
    tree = process_tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    alive = _reap(tree)
    proc.wait(timeout=10)
    assert not alive, f"{what}: processes survived the teardown: {alive}"


@dataclass(frozen=True)
class Postgres:
    """A running Postgres: ``url`` is a SQLAlchemy URL of its ``airflow`` database (trust auth)."""

    port: int
    user: str
    database: str
    pid: int

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg2)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"


@dataclass(frozen=True)
class PostgresInstall:
    """Where Postgres' server binaries are, and whom to run them as (``None``: ourselves)."""

    initdb: str
    postgres: str
    run_as: pwd.struct_passwd | None


def find_postgres() -> PostgresInstall:
    """Debian's Postgres (``/usr/lib/postgresql/<version>/bin``); raises :class:`ServiceMissing`.

    Postgres refuses to run as root: as root it runs as the ``postgres`` user Debian's package creates.
    """
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("postgres")
        except KeyError as err:
            raise ServiceMissing("running as root and no 'postgres' user to run Postgres as") from err
    return PostgresInstall(_pg_bin("initdb"), _pg_bin("postgres"), run_as)


@contextlib.contextmanager
def postgres_server(install: PostgresInstall) -> Iterator[Postgres]:
    """Postgres on a free loopback port, data in a throw-away directory, stopped (tree checked) after.

    Durability is off (``fsync``, ``synchronous_commit``): the data dies with the test.
    """
    as_user: dict[str, Any] = {}
    if install.run_as is not None:
        as_user = {"user": install.run_as.pw_uid, "group": install.run_as.pw_gid, "extra_groups": []}
    with _scratch_dir("memories-e2e-postgres-") as base:
        data = base / "data"
        if install.run_as is not None:
            os.chown(base, install.run_as.pw_uid, install.run_as.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(base)}
        done = subprocess.run(
            [install.initdb, "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8", "--no-sync"],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **as_user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout[-1000:]}{done.stderr[-2000:]}")
        port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
        }
        args = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        command = [install.postgres, "-D", str(data), *args]
        # SIGINT: Postgres's fast shutdown.
        with _listening(
            command, base=base, port=port, what="postgres", stop=signal.SIGINT, env=env, **as_user
        ) as proc:
            server = Postgres(port=port, user="airflow", database="airflow", pid=proc.pid)
            _create_database(server)
            yield server


def _create_database(server: Postgres) -> None:
    import psycopg2

    deadline = time.monotonic() + 60
    while True:  # listening comes a moment before accepting logins ("the database system is starting up")
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=server.port, user=server.user, dbname="postgres")
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # polling for readiness
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{server.database}"')
    finally:
        conn.close()


@dataclass(frozen=True)
class Redis:
    """A running Redis: ``url`` is its database 0."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"


def find_redis() -> str:
    """Debian's ``redis-server``; raises :class:`ServiceMissing`."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        raise ServiceMissing("redis-server not found (apt-get install redis-server)")
    return binary


@contextlib.contextmanager
def redis_server(binary: str) -> Iterator[Redis]:
    """Redis on a free loopback port, without persistence, stopped (tree checked) after."""
    port = free_port()
    args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with _scratch_dir("memories-e2e-redis-") as base:
        command = [binary, *args, "--dir", str(base)]
        with _listening(command, base=base, port=port, what="redis-server", stop=signal.SIGTERM) as proc:
            yield Redis(port=port, pid=proc.pid)
