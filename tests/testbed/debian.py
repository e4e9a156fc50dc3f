"""Debian's own clusters: made by postgresql-common's pg_createcluster, run with pg_ctlcluster, dropped with
pg_dropcluster.

A Debian cluster keeps postgresql.conf, pg_hba.conf, pg_ident.conf and conf.d/
in /etc/postgresql/<major>/<name>/ and its data in
/var/lib/postgresql/<major>/<name>, with ``data_directory``, ``hba_file``,
``ident_file``, ``external_pid_file`` and ``cluster_name`` naming them. Each
cluster here has a name of its own, its own port and Unix socket (no TCP
listener), and archives WAL the way README.md's Debian section says, from a
file in conf.d/. Debian's ``policy-rc.d`` keeps the package from starting
anything itself: every start is ``pg_ctlcluster``'s, and ``destroy`` is
``pg_dropcluster --stop``.

Local connections are Debian's ``peer``: the test bed connects as the
``postgres`` OS user (effective uid) as role postgres; root, as the role runs,
is mapped to the backup login the way README.md's "Remote hosts" section
says (``peer_map_root``).
"""

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg2

from .cluster import EXTENSION_DB, REPO, Cluster, _running
from .errors import TestbedError
from .osuser import OS_USER, chown_postgres
from .provision import provide

ETC = Path("/etc/postgresql")
VAR_LIB = Path("/var/lib/postgresql")
RUN_DIR = Path("/var/run/postgresql")
# README.md's archive path in its Debian example, replaced by each cluster's own archive directory.
README_ARCHIVE = "/srv/wal-archive"


@contextlib.contextmanager
def as_os_user(name=OS_USER):
    """The block with ``name``'s effective uid and gid (from root): peer authentication names a socket client
    by the effective uid it had at connect()."""
    if os.geteuid() != 0:
        yield
        return
    entry = pwd.getpwnam(name)
    os.setegid(entry.pw_gid)
    try:
        os.seteuid(entry.pw_uid)
        try:
            yield
        finally:
            os.seteuid(0)
    finally:
        os.setegid(0)


def query_as_postgres(sock, port, sql, db="postgres"):
    """Rows of ``sql`` on a server's Unix socket, as the postgres OS user (peer, as Debian's pg_hba.conf says)."""
    with as_os_user():
        conn = psycopg2.connect(host=str(sock), port=port, user="postgres", dbname=db, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def run_root(argv, check=True):
    """A postgresql-common command as root (it changes to the cluster's owner itself)."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def readme_archiving_conf(archive_dir):
    """The conf.d file docs/restore.md's Debian section gives for WAL archiving, for ``archive_dir``: (name, text).

    Read from the block under the line ``# /etc/postgresql/<major>/<cluster>/conf.d/<file>``, so the test bed
    sets archiving up exactly as users are told to.
    """
    text = (REPO / "docs" / "restore.md").read_text()
    found = re.search(r"^ {4}# /etc/postgresql/\d+/\w+/conf\.d/(\S+\.conf)\n((?: {4}\S.*\n)+)", text, re.M)
    if not found:
        raise TestbedError("docs/restore.md shows no conf.d file for archiving (a block starting "
                           "'# /etc/postgresql/<major>/<cluster>/conf.d/<name>.conf').")
    body = "".join(line[4:] + "\n" for line in found.group(2).splitlines())
    return found.group(1), body.replace(README_ARCHIVE, str(archive_dir))


class DebianCluster(Cluster):
    """One cluster of postgresql-common, ``<major>/<name>``; its socket and archive under ``root``."""

    def __init__(self, inst, name, root, port=None):
        super().__init__(inst, root, port)
        self.name = name
        self.conf_dir = ETC / str(inst.major) / name
        self.data_dir = VAR_LIB / str(inst.major) / name
        self.wal_dir = self.data_dir / "pg_wal"
        self.log_file = Path(f"/var/log/postgresql/postgresql-{inst.major}-{name}.log")
        self.pid_file = RUN_DIR / f"{inst.major}-{name}.pid"

    def __repr__(self):
        return f"<DebianCluster {self.major}/{self.name} port={self.port}>"

    @property
    def cluster(self):
        """``<major>/<name>``, as pg_lsclusters and cluster_name write it."""
        return f"{self.major}/{self.name}"

    @classmethod
    def create(cls, inst=None, root=None, port=None, waldir=None, archiving=True, start=True):
        """pg_createcluster on a port and socket of its own, archiving from conf.d (README.md), started with
        pg_ctlcluster, with the fixture extension in the database backupctl."""
        inst = inst or provide(15)
        name = "pgx_" + uuid.uuid4().hex[:10]
        cluster = cls(inst, name, root, port)
        cluster._prepare_dirs()
        initdb = ["--encoding=UTF8", "--locale=C.UTF-8"]
        if waldir:
            cluster.wal_dir = cluster.root / "wal"
            initdb.append(f"--waldir={cluster.wal_dir}")
        try:
            run_root(["pg_createcluster", inst.major, name, "-p", cluster.port, "-s", cluster.socket_dir,
                      "--start-conf=manual",
                      # Debian's template no longer sets it; pg_ctlcluster passes the same path on its command line.
                      "-o", f"external_pid_file={cluster.pid_file}",
                      "-o", "shared_buffers=32MB", "-o", "max_connections=40", "-o", "fsync=off", "--", *initdb])
            # pg_createcluster -o cannot write an empty value: the socket alone, no TCP listener.
            cluster.configure(listen_addresses="")
            if archiving:
                name, text = readme_archiving_conf(cluster.archive_dir)
                conf = cluster.conf_dir / "conf.d" / name
                conf.write_text(text)
                chown_postgres(conf)
            if start:
                cluster.start()
                cluster.sql(f"CREATE DATABASE {EXTENSION_DB}")
                cluster.sql("CREATE EXTENSION pg_exclusive_backup", dbname=EXTENSION_DB)
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def configure(self, **settings):
        """Settings of the test bed's own in conf.d/testbed.conf (Debian's include_dir, read last of all
        files by name order after the archiving file)."""
        lines = "".join(f"{k} = '{v}'\n" if isinstance(v, str) else f"{k} = {v}\n"
                        for k, v in settings.items() if v is not None)
        path = self.conf_dir / "conf.d" / "zz-testbed.conf"
        path.write_text(lines)
        chown_postgres(path)

    def start(self, timeout=60):
        try:
            run_root(["pg_ctlcluster", self.major, self.name, "start"])
        finally:
            pid = self.postmaster_pid()
            if pid:
                self.pid = pid
                _running[id(self)] = self
        if self.pid is None:
            raise TestbedError(f"The cluster {self.cluster} did not start.{self.log_tail()}")

    def postmaster_pid(self):
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, mode="fast"):
        if self.pid is None:
            return
        try:
            run_root(["pg_ctlcluster", "-m", mode, self.major, self.name, "stop"])
        finally:
            self.pid = None
            _running.pop(id(self), None)

    def destroy(self):
        """pg_dropcluster --stop: the cluster's data, /etc directory and log go, whatever state it is in."""
        _running.pop(id(self), None)
        self.pid = None
        try:
            if (self.conf_dir / "postgresql.conf").exists():
                run_root(["pg_dropcluster", "--stop", self.major, self.name])
        finally:
            # pg_dropcluster leaves what it did not make: conf.d's files of the test bed's, a restore's log and
            # what a forced restore set aside beside the data directory.
            shutil.rmtree(self.conf_dir, ignore_errors=True)
            for path in self.data_dir.parent.glob(self.name + ".*"):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink()
            shutil.rmtree(self.root, ignore_errors=True)

    def connect(self, dbname="postgres", user="postgres", autocommit=True):
        with as_os_user():
            conn = psycopg2.connect(**self.conninfo(dbname, user), connect_timeout=10)
        conn.autocommit = autocommit
        return conn

    def peer_map_root(self, login):
        """README.md's mapping of root to ``login`` (pg_ident.conf, and a pg_hba.conf line above the other local
        lines), then a reload: the role runs as root, and Debian's local connections are peer."""
        ident = self.conf_dir / "pg_ident.conf"
        ident.write_text(ident.read_text() + f"pgbackup    root    {login}\n")
        hba = self.conf_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines(keepends=True)
        first_local = next(i for i, line in enumerate(lines) if line.startswith("local"))
        lines.insert(first_local, f"local   all   {login}   peer map=pgbackup\n")
        hba.write_text("".join(lines))
        self.reload()

    def etc_files(self):
        """path -> bytes of every file under the cluster's /etc directory, to prove them untouched."""
        return {str(p): p.read_bytes() for p in sorted(self.conf_dir.rglob("*")) if p.is_file()}
