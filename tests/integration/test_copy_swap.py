"""A tablespace swapped for a link to a root-only directory while the role copies, as the postgres OS user would.

The copy runs as root; the server's OS user owns the tablespace's directory
and its parent, so it can rename the directory away and put a link to a
directory only root can read in its place. The copy checks the tablespace
(owner, a directory) once, then reads it after base.tar (or data/) is
written: the read must be of what was checked, never of what the name leads
to by then.

- After the check: a process running as postgres swaps the tablespace for a
  link the moment the copy's first output appears (base.tar for tar, data/
  for rsync and copy), which every method writes after its check and before
  it reads the tablespace. A ballast file makes that window long, and the
  test fails as "not exercised" when the tablespace's output already existed
  at the swap. The backup must hold the real tablespace (it restores with
  the table's rows) or fail naming the swap; never the root-only key.
- Before the check: the same swap before the run; the copy must refuse it,
  naming the tablespace, and copy nothing of the key.

After each case: the key file and its directory are unchanged (inode, owner,
mode, mtime, content), the live tablespace is the directory it was, and the
live server passes live_checks (not in backup mode, archiving, ownership,
rows after a crash restart), with the table in the tablespace intact.
"""

import os
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from live_checks import Checks, LiveCheck, read_record
from restore_proof import BASE_ROWS, create_table, restore_backup
from testbed.osuser import as_postgres

KEY = "pgx-root-only-key-" + uuid.uuid4().hex
TS_ROWS = 500
# Bytes of a file added to the data directory for the case: base.tar (or data/) takes this long to write, the window
# in which the swap lands. Well above what the test needs to swap (a few milliseconds) on a busy machine.
BALLAST = 192 << 20

# Runs as postgres: a line "swap" renames the tablespace's directory away and puts a link to the root-only
# directory under its name; "back" undoes it. Each line is answered once done.
SWAPPER = """
import os, sys
location, target = sys.argv[1], sys.argv[2]
moved = location + ".moved"
for line in sys.stdin:
    if line.strip() == "swap":
        os.rename(location, moved)
        os.symlink(target, location)
    elif line.strip() == "back" and os.path.islink(location):
        os.unlink(location)
        os.rename(moved, location)
    print(line.strip(), flush=True)
"""


class Swapper:
    """The postgres OS user's process that swaps ``location`` for a link to ``target``, by command."""

    def __init__(self, location, target):
        self.location = Path(location)
        self.proc = subprocess.Popen(as_postgres(["/usr/bin/python3", "-c", SWAPPER, str(location), str(target)]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.swapped_at = None

    def _say(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == command, f"the swapper ({self.proc.poll()}) answered {answer!r} to {command!r}"

    def swap(self):
        self._say("swap")
        self.swapped_at = time.monotonic()
        assert self.location.is_symlink()

    def back(self):
        if self.proc.poll() is None:
            self._say("back")
            self.proc.stdin.close()
            self.proc.wait(10)

    def end(self):
        """Put the directory back whatever happened (as root if the swapper is gone), and end the swapper by its PID."""
        moved = Path(str(self.location) + ".moved")
        if self.proc.poll() is None:
            self.back()
        if self.location.is_symlink() and moved.is_dir():
            self.location.unlink()
            moved.rename(self.location)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def root_only(scratch):
    """A root-only directory (0700) holding a root-only key file (0600); yields (directory, key)."""
    where = scratch / "root-only"
    where.mkdir(mode=0o700)
    key = where / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    os.chown(where, 0, 0)
    os.chown(key, 0, 0)
    return where, key


def identity(path):
    st = os.lstat(path)
    return (st.st_ino, st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns)


def holding_key(tree):
    """Files under ``tree`` whose bytes hold KEY (an uncompressed tar holding the key file does)."""
    found = []
    for root, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path) and KEY.encode() in Path(path).read_bytes():
                found.append(path)
    return found


def tree_files(top):
    """{relative path: size} of the regular files under ``top``."""
    return {os.path.relpath(os.path.join(root, name), top): os.lstat(os.path.join(root, name)).st_size
            for root, _dirs, files in os.walk(top) for name in files}


def copied_tablespace(backup_dir, oid):
    """{relative path: size} of the files the backup holds for tablespace ``oid``; None when it holds none."""
    archive = backup_dir / f"{oid}.tar"
    if archive.exists():
        with tarfile.open(archive) as tar:
            return {os.path.normpath(m.name): m.size for m in tar.getmembers() if m.isfile()}
    plain = backup_dir / "tablespaces" / str(oid)
    return tree_files(plain) if plain.is_dir() else None


def tablespace_output(backup_dir, method, oid):
    return backup_dir / f"{oid}.tar" if method == "tar" else backup_dir / "tablespaces" / str(oid)


def first_output(backup_dir, method):
    """What each method writes after its check of the tablespaces and before it reads them."""
    return backup_dir / ("base.tar" if method == "tar" else "data")


class Case:
    """One database with table t and a table in a tablespace of its own, whose directory postgres may rename."""

    def __init__(self, pg, scratch):
        self.pg = pg
        self.dbname = pg.create_database()
        create_table(pg, self.dbname)
        self.ts_name = f"ts_{self.dbname}"
        self.location = pg.create_tablespace(self.ts_name)
        self.oid = pg.value("SELECT oid FROM pg_tablespace WHERE spcname = %s", (self.ts_name,))
        pg.sql(f"CREATE TABLE in_ts (id int) TABLESPACE {self.ts_name}", dbname=self.dbname)
        pg.sql(f"INSERT INTO in_ts SELECT generate_series(1, {TS_ROWS})", dbname=self.dbname)
        # Nothing of the tablespace dirty or left to vacuum: the server has no reason to open its files while swapped.
        pg.sql("VACUUM ANALYZE in_ts", dbname=self.dbname)
        pg.sql("CHECKPOINT")
        self.inode = os.lstat(self.location).st_ino
        self.ballast = pg.data_dir / f"pgx_ballast_{uuid.uuid4().hex[:6]}"
        with open(self.ballast, "wb") as out:
            out.write(os.urandom(1 << 20) * (BALLAST >> 20))
        owner = os.stat(pg.data_dir)
        os.chown(self.ballast, owner.st_uid, owner.st_gid)
        self.live = LiveCheck(pg, self.dbname)
        self.label = f"swap-pg{pg.major}-{uuid.uuid4().hex[:8]}"

    def cleanup(self):
        pg = self.pg
        if self.ballast.exists():
            self.ballast.unlink()
        if pg.pid is None:
            pg.start()
        pg.end_backup_if_any()
        pg.drop_database(self.dbname)
        pg.sql(f"DROP TABLESPACE IF EXISTS {self.ts_name}")

    def finish(self, checks, root_only, before):
        """The key untouched, the live tablespace the directory it was, the live server sound with its rows."""
        where, key = root_only
        with checks("the root-only key"):
            assert (identity(where), identity(key)) == before, "the root-only directory or its key was changed"
            assert key.read_text() == KEY + "\n"
        with checks("the live tablespace"):
            assert not self.location.is_symlink() and os.lstat(self.location).st_ino == self.inode
        self.live.finish(expected_rows=BASE_ROWS, checks=checks)
        with checks("the live table in the tablespace"):
            assert self.pg.value("SELECT count(*) FROM in_ts", dbname=self.dbname) == TS_ROWS


def role_vars(case, method):
    return dict(exclusive_backup_label=case.label, exclusive_backup_method=method,
                exclusive_backup_archive_timeout=60, exclusive_backup_max_duration=600)


def wait_for(path, run, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.lexists(path):
        if run.proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} appeared:\n{run.wait().output[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.001)


@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_a_tablespace_swapped_after_the_check_is_copied_as_checked(pg, method, scratch, runs, root_only, restore):
    """The swap lands while base.tar (data/) is written, after the check: the real tablespace, never the key."""
    before = (identity(root_only[0]), identity(root_only[1]))
    case = Case(pg, scratch)
    checks = Checks()
    swapper = Swapper(case.location, root_only[0])
    backup_dir = scratch / "backups" / case.label
    try:
        run = runs(pg, "swap-after", **role_vars(case, method))
        wait_for(first_output(backup_dir, method), run)
        swapper.swap()
        reached = os.path.lexists(tablespace_output(backup_dir, method, case.oid))
        while not os.path.lexists(tablespace_output(backup_dir, method, case.oid)) and run.proc.poll() is None:
            time.sleep(0.001)
        margin = time.monotonic() - swapper.swapped_at
        run.wait()
        swapper.back()
    finally:
        swapper.end()
        case.ballast.unlink()
    try:
        print(f"\nMEASURED swap after the check pg{pg.major} {method}: role run {run.seconds:.1f} s, rc {run.rc}, "
              f"the tablespace's output appeared {margin * 1000:.0f} ms after the swap")
        assert not reached, "the copy had reached the tablespace before the swap: the race was not exercised"
        with checks("the backup"):
            leaked = holding_key(backup_dir)
            assert not leaked, f"the backup holds the root-only key: {leaked}"
            record = read_record(backup_dir)
            if record["status"] == "complete":
                assert run.rc == 0, run.output[-4000:]
                assert copied_tablespace(backup_dir, case.oid) == tree_files(case.location), \
                    "the backup's tablespace is not the real tablespace's files"
            else:
                assert str(case.oid) in record["error"] and str(case.location) in record["error"], record["error"]
                print(f"MEASURED swap after the check pg{pg.major} {method}: failed: {record['error'][:300]}")
        if not checks.failures and record["status"] == "complete":
            with checks("the backup restores with the tablespace's rows"):
                restored, seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
                assert restored.value("SELECT count(*) FROM in_ts", dbname=case.dbname) == TS_ROWS
                print(f"MEASURED swap after the check pg{pg.major} {method}: restore {seconds:.1f} s")
        case.finish(checks, root_only, before)
        checks.done()
    finally:
        case.cleanup()


@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_a_tablespace_swapped_before_the_check_is_refused(one_pg, method, scratch, runs, root_only):
    """The swap lands before the run: the copy refuses the tablespace, naming it, and copies nothing of the key."""
    pg = one_pg
    before = (identity(root_only[0]), identity(root_only[1]))
    case = Case(pg, scratch)
    case.ballast.unlink()
    checks = Checks()
    swapper = Swapper(case.location, root_only[0])
    backup_dir = scratch / "backups" / case.label
    try:
        swapper.swap()
        run = runs(pg, "swap-before", **role_vars(case, method)).wait()
        swapper.back()
    finally:
        swapper.end()
    try:
        print(f"\nMEASURED swap before the check pg{pg.major} {method}: role run {run.seconds:.1f} s, rc {run.rc}")
        with checks("the run"):
            assert run.rc != 0, "the copy took a tablespace that leads to a root-only directory"
            record = read_record(backup_dir)
            assert record["status"] == "failed", record
            assert f"Tablespace {case.oid}" in record["error"] and "Nothing was copied" in record["error"], record
            assert not holding_key(backup_dir), "the backup holds the root-only key"
            assert copied_tablespace(backup_dir, case.oid) is None, "the refused tablespace was copied"
        case.finish(checks, root_only, before)
        checks.done()
    finally:
        case.cleanup()
