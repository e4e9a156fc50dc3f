"""What every production-layout case asserts on the live server and on the backup it left.

``LiveCheck(cluster, dbname)`` notes the server's state before a case;
``finish()`` after it asserts the invariants that matter in production:

- the server is not in backup mode (no backup_label, pg_is_in_backup() false);
- archiving still works and pg_stat_archiver.failed_count did not grow;
- no foreign timeline reached the live WAL directory (the target of the
  pg_wal link) or the WAL archive: no new ``*.history`` file, no segment of
  another timeline;
- nothing in the data directory, the WAL directory, the tablespaces or the
  archive is owned by anyone but the server's OS user (the collection runs as
  root: a root-owned file there is a file it wrote);
- after a crash (SIGKILL of every server process) and a restart, the table the
  test wrote holds exactly the rows committed before it, on the same timeline.

``read_record`` and ``assert_backup_layout`` check the backup: its status,
and that its pg_wal is a directory of its own; restore_proof restores it.
"""

import json
import os
import pwd
import re
import subprocess
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

from restore_proof import base_tar
from testbed.osuser import OS_USER


class Checks:
    """Collects failed assertions so that one test reports all of them: the run's, the live server's, the backup's.

        checks = Checks()
        with checks("the run"):
            assert run.rc == 0
        ...
        checks.done()   # one AssertionError listing every failure
    """

    def __init__(self):
        self.failures = []

    @contextmanager
    def __call__(self, what):
        try:
            yield
        except AssertionError as exc:
            self.failures.append(f"[{what}] {exc}")

    def done(self):
        if self.failures:
            raise AssertionError(f"{len(self.failures)} check(s) failed:\n\n" + "\n\n".join(self.failures))


SEGMENT = re.compile(r"^([0-9A-F]{8})[0-9A-F]{16}(\.partial)?$")
HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")


def _postgres_uid():
    return pwd.getpwnam(OS_USER).pw_uid


def _names(path):
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def in_backup_sql(cluster):
    """pg_is_in_backup() where the API lives (14: built in; 15+: the extension's database)."""
    return cluster.value("SELECT pg_is_in_backup()", dbname=cluster.backup_db)


def timeline(cluster):
    return cluster.value("SELECT timeline_id FROM pg_control_checkpoint()")


def archiver(cluster):
    row = cluster.sql("SELECT archived_count, failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver")[0]
    return {"archived_count": row[0], "failed_count": row[1], "last_failed_wal": row[2]}


def foreign_owned(paths, uid, limit=10):
    """Entries under ``paths`` (not following links) not owned by ``uid``."""
    found = []
    for top in paths:
        for root, dirs, files in os.walk(top):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                try:
                    if os.lstat(name).st_uid != uid:
                        found.append(name)
                except OSError:
                    continue   # the server removed it meanwhile
                if len(found) >= limit:
                    return found
    return found


class LiveCheck:
    """Before/after assertions on a live test bed cluster around one case."""

    def __init__(self, cluster, dbname, table="t"):
        self.cluster, self.dbname, self.table = cluster, dbname, table
        self.timeline = timeline(cluster)
        self.archiver = archiver(cluster)
        self.wal_names = _names(cluster.wal_dir)
        self.archive_names = _names(cluster.archive_dir)
        self.measured = {}

    def rows(self):
        return self.cluster.value(f"SELECT count(*) FROM {self.table}", dbname=self.dbname)

    def _foreign_wal(self):
        """History files new since the case began or of a later timeline, and new segments of another
        timeline, in the live WAL directory and in the archive."""
        own = "%08X" % self.timeline
        found = []
        for where, before in ((self.cluster.wal_dir, self.wal_names), (self.cluster.archive_dir, self.archive_names)):
            for name in sorted(_names(where)):
                if HISTORY.match(name) and (name not in before or int(name[:8], 16) > self.timeline):
                    found.append(f"{where}/{name}")
                match = SEGMENT.match(name)
                if match and name not in before and match.group(1) != own:
                    found.append(f"{where}/{name}")
        return found

    def assert_not_in_backup(self):
        cluster = self.cluster
        label = cluster.data_dir / "backup_label"
        assert not label.exists(), f"the live server is still in backup mode:\n{label.read_text()}"
        assert in_backup_sql(cluster) is False, "pg_is_in_backup() says the live server is in backup mode"

    def assert_archiving_works(self, timeout=30):
        """A WAL switch reaches the archive, and no archive attempt failed since the case began."""
        cluster = self.cluster
        started = time.monotonic()
        cluster.sql("SELECT pg_create_restore_point('pgx-live-check')")
        lsn = cluster.value("SELECT pg_switch_wal()::text")
        segment = cluster.walfile(lsn)
        deadline = time.monotonic() + timeout
        while not (cluster.archive_dir / segment).exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"archiving is stuck: {segment} did not reach {cluster.archive_dir} in "
                                     f"{timeout}s; "
                                     f"pg_stat_archiver {archiver(cluster)}{cluster.log_tail(15)}")
            time.sleep(0.05)
        now = archiver(cluster)
        assert now["failed_count"] == self.archiver["failed_count"], (
            f"archive attempts failed during the case: pg_stat_archiver before {self.archiver}, after {now}"
            f"{cluster.log_tail(15)}")
        self.measured["archive_roundtrip"] = time.monotonic() - started

    def assert_nothing_foreign(self):
        foreign = self._foreign_wal()
        assert not foreign, f"a foreign timeline reached the live WAL or the archive: {foreign}"
        cluster = self.cluster
        tablespaces = sorted(str(p) for p in cluster.root.glob("tblspc_*"))
        owned = foreign_owned([str(cluster.data_dir), str(cluster.wal_dir), str(cluster.archive_dir), *tablespaces],
                              _postgres_uid())
        assert not owned, f"files in the live cluster not owned by {OS_USER} (written by the collection?): {owned}"

    def assert_rows_survive_a_crash(self, expected=None):
        """Crash the server (SIGKILL), start it, and count: exactly what was committed, same timeline."""
        cluster = self.cluster
        committed = self.rows()
        if expected is not None:
            assert committed == expected, f"{committed} rows in {self.table}, the test committed {expected}"
        started = time.monotonic()
        cluster.crash()
        cluster.start()
        self.measured["crash_restart"] = time.monotonic() - started
        after = self.rows()
        assert after == committed, f"after a crash and restart {after} rows, {committed} were committed"
        assert timeline(cluster) == self.timeline, (
            f"the live server left timeline {self.timeline} for {timeline(cluster)} after a crash restart")

    def finish(self, expected_rows=None, crash=True, checks=None):
        """All the live assertions, in an order that keeps each meaningful (a crash resets the archiver's
        counters). Failures go to ``checks`` (a Checks) when given, else raise at the end."""
        own = checks is None
        checks = checks or Checks()
        with checks("live server: backup mode"):
            self.assert_not_in_backup()
        with checks("live server: archiving"):
            self.assert_archiving_works()
        with checks("live server: WAL directory, archive, ownership"):
            self.assert_nothing_foreign()
        if crash:
            with checks("live server: crash and restart"):
                self.assert_rows_survive_a_crash(expected_rows)
                self.assert_not_in_backup()
                self.assert_nothing_foreign()
        if own:
            checks.done()
        return self.measured


# -- the backup ---------------------------------------------------------------

def read_record(backup_dir):
    path = Path(backup_dir) / "backup.json"
    if not path.exists():
        there = sorted(p.name for p in Path(backup_dir).iterdir()) if Path(backup_dir).exists() else "no directory"
        raise AssertionError(f"no backup.json in {backup_dir}: {there}")
    return json.loads(path.read_text())


def _tar_members(archive):
    """{name: type char} of a tar file ('d' directory, 'l' link, '-' file)."""
    if str(archive).endswith(".zst"):
        out = subprocess.run(["tar", "--zstd", "-tvf", str(archive)], capture_output=True, text=True, check=True).stdout
        members = {}
        for line in out.splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6:
                members[parts[5].split(" -> ")[0]] = parts[0][0]
        return members
    with tarfile.open(archive) as tar:
        return {m.name: ("d" if m.isdir() else "l" if m.issym() else "h" if m.islnk() else "-")
                for m in tar.getmembers()}


def assert_backup_layout(cluster, backup_dir):
    """The backup's pg_wal is a directory of its own (as pg_basebackup writes it), never a link
    into the live WAL directory, and a plain copy's tablespace links point inside the backup."""
    backup_dir = Path(backup_dir)
    plain = backup_dir / "data"
    if plain.is_dir():
        pg_wal = plain / "pg_wal"
        assert not pg_wal.is_symlink(), (
            f"the copy's pg_wal is a link to {os.readlink(pg_wal)}: writing WAL into the copy writes into the live "
            f"WAL directory {cluster.wal_dir}")
        assert pg_wal.is_dir(), "the copy has no pg_wal directory"
        for link in (plain / "pg_tblspc").iterdir():
            if link.is_symlink():
                target = (link.parent / os.readlink(link)).resolve()
                assert str(target).startswith(str(backup_dir.resolve()) + "/"), (
                    f"the copy's {link.name} links to {target}, outside the backup")
        return
    base = base_tar(backup_dir)
    assert base is not None, f"{backup_dir} holds neither data/ nor base.tar*"
    members = _tar_members(base)
    kind = members.get("./pg_wal", members.get("pg_wal"))
    assert kind == "d", (f"pg_wal in {base.name} is {'a link' if kind == 'l' else repr(kind)}, not a directory: "
                         f"restored as it is, it points into the live WAL directory {cluster.wal_dir}")
