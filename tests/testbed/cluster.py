"""One PostgreSQL cluster of the test bed, run as the ``postgres`` OS user."""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2

from .errors import TestbedError
from .osuser import as_postgres, chown_postgres, open_to_postgres
from .provision import provide

EXTENSION_DB = "backupctl"
REPO = Path(__file__).resolve().parents[2]

# Production layout by default: pg_wal is a link to a directory outside the data
# directory (initdb --waldir). PGX_WAL_INSIDE=1 brings back the plain initdb layout.
WAL_OUTSIDE = os.environ.get("PGX_WAL_INSIDE", "") in ("", "0")

_running = {}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces; the fields after its ')' are fixed.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid):
    """True while ``pid`` runs; a zombie nobody reaps counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def leave_running():
    """Forget the servers started so far: the CLI's start leaves its server for a person to stop."""
    _running.clear()


def stop_all():
    """Stop every server this process started (atexit, signals, fixtures)."""
    for cluster in list(_running.values()):
        cluster.stop(mode="immediate")


atexit.register(stop_all)


class Cluster:
    """A server with its data directory, socket, log and WAL archive under ``root``.

    ``wal_dir`` is where the server's WAL really lives: ``<root>/wal`` (the
    target of the ``pg_wal`` link) for clusters created with ``waldir``, else
    ``<data>/pg_wal``.
    """

    def __init__(self, inst, root, port=None):
        self.inst = inst
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.wal_dir = self.data_dir / "pg_wal"
        self.socket_dir = self.root / "sock"
        self.archive_dir = self.root / "archive"
        self.log_file = self.root / "server.log"
        self.port = port or free_port()
        self.pid = None
        self.archiving_broken = False

    def __repr__(self):
        return f"<Cluster PG{self.major} port={self.port} {self.root}>"

    @property
    def major(self):
        return self.inst.major

    @property
    def api(self):
        return self.inst.api

    @property
    def backup_db(self):
        """The database where exclusive backups are started and stopped."""
        return EXTENSION_DB if self.api == "extension" else "postgres"

    # -- life cycle -------------------------------------------------------

    @classmethod
    def create(cls, inst, root, port=None, waldir=None):
        """initdb, configure with archiving, start, and prepare the backup database.

        ``waldir`` (default: on, unless PGX_WAL_INSIDE=1) puts the WAL in
        ``<root>/wal`` with ``initdb --waldir``, as production servers have it:
        ``pg_wal`` in the data directory is then a symbolic link.
        """
        cluster = cls(inst, root, port)
        cluster._prepare_dirs()
        argv = ["initdb", "-D", cluster.data_dir, "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync"]
        if WAL_OUTSIDE if waldir is None else waldir:
            cluster.wal_dir = cluster.root / "wal"
            argv.append(f"--waldir={cluster.wal_dir}")
        cluster._pg(argv)
        cluster.configure()
        cluster.start()
        cluster.sql(f"CREATE DATABASE {EXTENSION_DB}")
        if cluster.api == "extension":
            cluster.sql("CREATE EXTENSION pg_exclusive_backup", dbname=EXTENSION_DB)
        return cluster

    def _prepare_dirs(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        open_to_postgres(self.root)
        for path in (self.socket_dir, self.archive_dir):
            path.mkdir(exist_ok=True)
        chown_postgres(self.root)

    def _pg(self, argv):
        cmd = as_postgres([self.inst.tool(argv[0]), *argv[1:]])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise TestbedError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{self.log_tail()}")
        return proc.stdout

    def configure(self, **settings):
        """Write the test bed's settings to ``testbed.conf`` (included last)."""
        base = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "wal_level": "replica",
            "archive_mode": "on",
            # Copy, then rename: a reader never sees a half-written segment.
            "archive_command": (f"test ! -f {self.archive_dir}/%f && cp %p {self.archive_dir}/%f.part"
                                f" && mv {self.archive_dir}/%f.part {self.archive_dir}/%f"),
            "max_wal_senders": 5,
            "max_connections": 40,
            "shared_buffers": "32MB",
            # Only an OS crash would need fsync; the tests crash processes, not machines.
            "fsync": "off",
            "log_line_prefix": "%m [%p] ",
        }
        base.update(settings)
        lines = []
        for key, value in base.items():
            if value is None:
                continue
            if isinstance(value, str):
                value = "'" + value.replace("'", "''") + "'"
            lines.append(f"{key} = {value}\n")
        (self.data_dir / "testbed.conf").write_text("".join(lines))
        conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'testbed.conf'\n"
        if include not in conf.read_text():
            with conf.open("a") as out:
                out.write(include)
        chown_postgres(self.data_dir)

    def start(self, timeout=60):
        if _port_in_use(self.port):
            raise TestbedError(
                f"Port {self.port} on 127.0.0.1 is in use: stop whatever holds it or choose another port.")
        pidfile = self.data_dir / "postmaster.pid"
        try:
            self._pg(["pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", timeout, "start"])
        finally:
            # Also after a failed start: a postmaster that came up too slowly must still be stopped.
            if pidfile.exists():
                self.pid = int(pidfile.read_text().split()[0])
                _running[id(self)] = self
        if self.pid is None:
            raise TestbedError(f"The server in {self.data_dir} did not start.{self.log_tail()}")

    def stop(self, mode="fast"):
        """Stop the postmaster by its PID (pg_ctl signals the PID in postmaster.pid)."""
        if self.pid is None:
            return
        try:
            self._pg(["pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "-t", 60, "stop"])
        except TestbedError:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        finally:
            self.pid = None
            _running.pop(id(self), None)

    def crash(self):
        """SIGKILL the postmaster and its children at once, like a power cut to the processes.

        Not pg_ctl -m immediate: PostgreSQL 14 cancels an exclusive backup on
        any shutdown it is told about, which a crash does not allow.
        """
        if self.pid is None:
            return
        victims = [self.pid, *_children(self.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in victims):
            if time.monotonic() > deadline:
                raise TestbedError(f"Processes {victims} of {self.data_dir} survived SIGKILL for 30 s.")
            time.sleep(0.05)
        self._remove_stale_locks(victims[0])
        self.pid = None
        _running.pop(id(self), None)

    def _remove_stale_locks(self, postmaster):
        """Remove the lock files of a killed postmaster that is still a zombie.

        The init process of this machine reaps orphans only every few seconds;
        until then kill(pid, 0) succeeds on the dead postmaster's PID and a new
        postmaster refuses to start ("lock file already exists"). Every server
        process is dead by now, so the lock files are stale, as after a real crash.
        """
        for lock in (self.data_dir / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.port}.lock"):
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if pid == postmaster and not _alive(pid):
                lock.unlink()

    def restart(self):
        self.stop()
        self.start()

    def reload(self):
        self.sql("SELECT pg_reload_conf()")
        time.sleep(0.3)

    def destroy(self):
        self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines=30):
        try:
            return "\n--- server log ---\n" + "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    # -- SQL --------------------------------------------------------------

    def conninfo(self, dbname="postgres", user="postgres"):
        return {"host": str(self.socket_dir), "port": self.port, "dbname": dbname, "user": user}

    def connect(self, dbname="postgres", user="postgres", autocommit=True):
        conn = psycopg2.connect(**self.conninfo(dbname, user), connect_timeout=10)
        conn.autocommit = autocommit
        return conn

    def sql(self, query, params=None, dbname="postgres", user="postgres"):
        """Run one statement; return its rows, or None for a statement without a result."""
        conn = self.connect(dbname, user)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def value(self, query, params=None, dbname="postgres", user="postgres"):
        return self.sql(query, params, dbname, user)[0][0]

    def create_database(self, extension=False):
        name = "t_" + uuid.uuid4().hex[:10]
        self.sql(f"CREATE DATABASE {name}")
        if extension:
            self.sql("CREATE EXTENSION pg_exclusive_backup", dbname=name)
        return name

    def drop_database(self, name):
        force = " WITH (FORCE)" if self.major >= 13 else ""
        self.sql(f"DROP DATABASE IF EXISTS {name}{force}")

    # -- backup state -----------------------------------------------------

    def in_backup(self):
        return (self.data_dir / "backup_label").exists()

    def backup_label(self):
        return (self.data_dir / "backup_label").read_text()

    def start_backup(self, label, fast=True):
        return self.value("SELECT pg_start_backup(%s, %s)::text", (label, fast), dbname=self.backup_db)

    def stop_backup(self):
        if self.api == "native":
            return self.value("SELECT lsn::text FROM pg_stop_backup(true, false)")
        return self.value("SELECT pg_stop_backup()::text", dbname=self.backup_db)

    def end_backup_if_any(self):
        """Leave the server out of backup mode whatever a test did."""
        if self.pid is not None and self.in_backup():
            self.stop_backup()

    def walfile(self, lsn):
        return self.value("SELECT pg_walfile_name(%s::pg_lsn)", (lsn,))

    def wait_archived(self, walfile, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.archive_dir / walfile).exists():
                return
            time.sleep(0.1)
        raise TestbedError(f"WAL segment {walfile} did not reach {self.archive_dir} in {timeout}s.{self.log_tail()}")

    # -- faults and topology ----------------------------------------------

    def break_archiving(self):
        """Make every archive attempt fail (ALTER SYSTEM overrides testbed.conf)."""
        self.sql("ALTER SYSTEM SET archive_command = 'false'")
        self.reload()
        self.archiving_broken = True

    def repair_archiving(self):
        self.sql("ALTER SYSTEM RESET archive_command")
        self.reload()
        self.archiving_broken = False

    def create_tablespace(self, name):
        """A tablespace in ``<root>/tblspc_<name>``, a directory owned by postgres (mode 0700)."""
        location = self.root / f"tblspc_{name}"
        location.mkdir()
        location.chmod(0o700)
        chown_postgres(location)
        self.sql(f"CREATE TABLESPACE {name} LOCATION %s", (str(location),))
        return location

    # -- logins -----------------------------------------------------------

    def login_statements(self, name, monitor=True):
        """README.md's statements for a least-privilege backup login on this major, for role ``name``.

        Read from README.md's "A least-privilege backup user" section, so the
        tests prove exactly what the README tells users to run; without
        ``monitor``, the ``GRANT pg_monitor`` is left out.
        """
        statements = readme_login_statements(self.api)
        out = []
        for statement in statements:
            if not monitor and re.match(r"GRANT pg_monitor TO ", statement):
                continue
            out.append(re.sub(r"\bpgx_backup\b", name, statement))
        return out

    def create_login(self, name, monitor=True):
        """Create the login role ``name`` with exactly README.md's grants (in the backup database).

        On 15+ the GRANT EXECUTE runs in the extension's database, on 14 in
        ``postgres``: function privileges belong to one database. The socket
        is ``trust`` in pg_hba.conf (initdb --auth=trust), so no password is
        needed to log in. Undo it with drop_login.
        """
        for statement in self.login_statements(name, monitor):
            self.sql(statement, dbname=self.backup_db)
        return name

    def drop_login(self, name):
        if self.value("SELECT count(*) FROM pg_roles WHERE rolname = %s", (name,)):
            self.sql(f"DROP OWNED BY {name}", dbname=self.backup_db)
            self.sql(f"DROP ROLE {name}")

    def make_standby(self, root):
        """A streaming standby built with pg_basebackup (pg_wal a directory): a server in recovery."""
        standby = Cluster(self.inst, root)
        standby._prepare_dirs()
        basebackup = Path(self.inst.tool("pg_basebackup"))
        if not basebackup.exists():
            # The npm build of 14 ships no pg_basebackup; a newer one backs up older servers.
            basebackup = Path(provide(15).tool("pg_basebackup"))
        self._pg([basebackup, "-h", self.socket_dir, "-p", self.port, "-U", "postgres",
                  "-D", standby.data_dir, "-R", "-X", "stream", "--no-sync"])
        standby.configure()
        standby.start()
        return standby

    @classmethod
    def restore(cls, inst, copy_dir, root, archive_dir, target="immediate", timeout=120):
        """Start a server on a restored copy, replaying from ``archive_dir``.

        Returns the promoted cluster once it has reached consistency; raises
        with the server log when it does not. A ``pg_wal`` that is a symbolic
        link (a copy of a data directory made with ``initdb --waldir``) is
        replaced by an empty directory first, as a restore on the same host
        must do: a restored server must never write into the live WAL. The
        link's target is kept in ``replaced_wal_link``.
        """
        cluster = cls(inst, root)
        cluster.root.mkdir(parents=True, exist_ok=True)
        if Path(copy_dir) != cluster.data_dir:
            shutil.move(str(copy_dir), cluster.data_dir)
        cluster.replaced_wal_link = None
        pg_wal = cluster.data_dir / "pg_wal"
        if pg_wal.is_symlink():
            cluster.replaced_wal_link = os.readlink(pg_wal)
            pg_wal.unlink()
        (pg_wal / "archive_status").mkdir(parents=True, exist_ok=True)
        cluster._prepare_dirs()
        cluster.data_dir.chmod(0o700)
        (cluster.data_dir / "recovery.signal").touch()
        cluster.configure(
            archive_mode="off",
            archive_command=None,
            restore_command=f"cp {archive_dir}/%f %p",
            recovery_target=target,
            recovery_target_action="promote",
        )
        try:
            cluster.start(timeout=timeout)
            deadline = time.monotonic() + timeout
            while cluster.value("SELECT pg_is_in_recovery()"):
                if time.monotonic() > deadline:
                    raise TestbedError(f"The restored server at {cluster.root} is still in recovery.{cluster.log_tail()}")
                time.sleep(0.1)
        except Exception:
            cluster.stop(mode="immediate")
            raise
        return cluster


def readme_login_statements(api):
    """The SQL statements docs/installing.md gives for a least-privilege backup user, per API (``extension``: 15+).

    Each indented block of the section "A least-privilege backup user" belongs
    to the paragraph before it: the one naming "PostgreSQL 15 and later" holds
    the extension's statements, the one naming "PostgreSQL 14" the native ones.
    """
    text = (REPO / "docs" / "installing.md").read_text()
    section = text.split("## A least-privilege backup user", 1)
    if len(section) != 2:
        raise TestbedError("docs/installing.md has no section '## A least-privilege backup user'.")
    body = section[1].split("\n## ", 1)[0]
    blocks = {}
    paragraph, code = [], []

    def flush():
        if code:
            intro = " ".join(paragraph)
            key = ("extension" if "PostgreSQL 15 and later" in intro
                   else "native" if "PostgreSQL 14" in intro else None)
            if key and key not in blocks:
                blocks[key] = " ".join(code)
            paragraph.clear()
            code.clear()

    for line in body.splitlines():
        if line.startswith("    ") and line.strip():
            code.append(line.strip())
        elif line.strip():
            flush()
            paragraph.append(line.strip())
    flush()
    if api not in blocks:
        raise TestbedError(f"docs/installing.md's least-privilege section has no SQL block for the {api} API.")
    return [s.strip() for s in blocks[api].split(";") if s.strip()]
