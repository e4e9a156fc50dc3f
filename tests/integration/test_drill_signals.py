"""The restore drill signals only the server it started, and stops it on every way out (issue 18, defect 6).

The scratch copy's postmaster.pid is written by the postgres OS user, who can
put any PID in it. Here a process of that user does so while the drill runs:
it writes the PID of a root-owned ``sleep`` the test started, or the live
server's postmaster PID, over the drill server's own. After the drill the
sleep and the live server must be alive and untouched, and the drill's own
server gone: no process left with the scratch data directory as its working
directory. Drills whose checks fail, whose login is refused, or whose WAL is
damaged leave no server either.
"""

import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_label import LABEL_FILE, restorable_label
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_restore import verify_restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.server import as_user
from testbed.osuser import OS_USER, chown_postgres

# Run as postgres: once the drill server's postmaster.pid holds its port and socket lines, put the victim's
# PID on its first line, in place (the server rewrites other lines itself), and note the PID it replaced.
REWRITER = r"""
import glob, os, sys, time
pattern, victim, noted = sys.argv[1:4]
deadline = time.time() + 300
while time.time() < deadline:
    for path in glob.glob(pattern):
        try:
            with open(path, "r+") as handle:
                lines = handle.read().split("\n")
                if len(lines) < 6 or not lines[4].strip() or lines[0].strip() == victim:
                    continue
                with open(noted, "a") as out:
                    out.write(lines[0].strip() + "\n")
                lines[0] = victim
                handle.seek(0)
                handle.write("\n".join(lines))
                handle.truncate()
        except (IOError, OSError):
            continue
    time.sleep(0.02)
"""


def connect(socket_dir, port, user="postgres", dbname="postgres"):
    conn = psycopg2.connect(host=socket_dir, port=port, user=user, dbname=dbname, connect_timeout=5)
    conn.autocommit = True
    return conn


def plain_backup(cluster, backup_dir):
    """start, `cp -a` of the data directory with pg_wal emptied, stop; returns the stop's last WAL segment."""
    data = backup_dir / "data"
    backup_dir.mkdir()
    cluster.start_backup(f"drill signals {uuid.uuid4()}")
    subprocess.run(["cp", "-a", str(cluster.data_dir), str(data)], check=True)
    for name in ("postmaster.pid", "postmaster.opts"):
        (data / name).unlink()
    # The test bed's pg_wal is a link to a directory of its own: the copy gets an empty pg_wal of its own, and the
    # live WAL behind the link is never touched (emptying it through the link zeroed archived segments).
    wal = data / "pg_wal"
    if wal.is_symlink():
        wal.unlink()
        wal.mkdir(mode=0o700)
        shutil.chown(wal, OS_USER, OS_USER)
    else:
        for entry in wal.iterdir():
            if entry.is_file():
                entry.unlink()
    stop_wal_file = cluster.walfile(cluster.stop_backup())
    cluster.wait_archived(stop_wal_file)
    label = (data / LABEL_FILE).read_text()
    (data / LABEL_FILE).write_text(restorable_label(label) if cluster.api == "extension" else label)
    return stop_wal_file


def drill_processes(parent):
    """PIDs of the processes whose working directory is a drill's scratch directory under ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd.startswith(f"{parent}/pgx-verify-"):
                found.append(int(entry))
    return found


def end_leftovers(parent):
    """A server the drill left behind (the old code did) is ended here by its PID, found by its cwd."""
    for pid in drill_processes(parent):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def drill(pg, scratch):
    """(backup directory, its stop segment, parent of the drills' scratch directories); leftovers ended after."""
    pg.sql("DROP TABLE IF EXISTS t")
    pg.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g")
    backup_dir = scratch / "backup"
    stop_wal_file = plain_backup(pg, backup_dir)
    parent = scratch / "drills"
    parent.mkdir()
    parent.chmod(0o755)
    yield backup_dir, stop_wal_file, parent
    end_leftovers(parent)


def slow_check():
    """A check that keeps the drill's server up for a while after its promotion."""
    return {"name": "slow", "sql": "SELECT 1 FROM pg_sleep(2)"}


def run_drill(pg, backup_dir, parent, **kwargs):
    kwargs.setdefault("wal_archive_dir", str(pg.archive_dir))
    return verify_restore(str(backup_dir), str(pg.data_dir), timeout=120, work_parent=str(parent), connect=connect,
                          **kwargs)


@pytest.mark.parametrize("victim", ["root_sleep", "live_postmaster"])
def test_a_pid_planted_in_the_scratch_postmaster_pid_is_never_signalled(pg, scratch, drill, victim):
    backup_dir, _stop, parent = drill
    sleep = subprocess.Popen(["sleep", "600"])
    live_pid = pg.pid
    rows = pg.value("SELECT count(*) FROM t")
    target = sleep.pid if victim == "root_sleep" else live_pid
    notes = scratch / "notes"
    notes.mkdir()
    chown_postgres(notes)
    postgres = pwd.getpwnam(OS_USER)
    # Started as postgres itself (not through runuser), so that its PID is the one ended after the test.
    rewriter = subprocess.Popen(["/usr/bin/python3", "-c", REWRITER, f"{parent}/pgx-verify-*/data/postmaster.pid",
                                 str(target), str(notes / "replaced")], preexec_fn=as_user(postgres.pw_uid, postgres.pw_gid))
    try:
        started = time.monotonic()
        result = run_drill(pg, backup_dir, parent, checks=[slow_check()])
        print(f"\npg{pg.major}: the drill with {victim} planted took {time.monotonic() - started:.1f}s")
        replaced = (notes / "replaced").read_text().split()
        assert replaced, "the planted PID was written before the drill ended"
        assert result["ok"] is True, result
        assert sleep.poll() is None, f"the root-owned sleep was signalled: {sleep.returncode}"
        assert pg.pid == live_pid and Path(f"/proc/{live_pid}").exists(), "the live postmaster was signalled"
        assert pg.value("SELECT count(*) FROM t") == rows, "the live server answers with its rows"
        assert drill_processes(parent) == [], "the drill's own server is still running"
        assert not any(Path(f"/proc/{pid}").exists() for pid in map(int, replaced)), "the drill's server is alive"
    finally:
        for proc in (rewriter, sleep):
            proc.kill()
            proc.wait()
        if not Path(f"/proc/{live_pid}").exists():   # the old code signalled it: the next test gets it running
            pg.crash()
            pg.start()


def test_a_drill_whose_checks_fail_stops_its_server(pg, drill):
    backup_dir, _stop, parent = drill
    wrong = {"name": "wrong", "sql": "SELECT count(*) FROM t", "expect": 1}
    with pytest.raises(BackupError) as caught:
        run_drill(pg, backup_dir, parent, checks=[wrong])
    assert "failed the check 'wrong'" in caught.value.msg and caught.value.facts["check_ran"] is True
    assert drill_processes(parent) == [], "the drill's own server is still running"


def test_a_drill_whose_recovery_fails_stops_its_server(pg, drill):
    """The server runs and refuses the drill's login: recovery fails with the server up."""
    backup_dir, _stop, parent = drill
    with pytest.raises(BackupError) as caught:
        run_drill(pg, backup_dir, parent, login_user="no_such_role")
    assert "refused the drill's login" in caught.value.msg, caught.value.msg
    assert drill_processes(parent) == [], "the drill's own server is still running"


def test_a_drill_whose_wal_is_damaged_stops_its_server(pg, scratch, drill):
    backup_dir, stop_wal_file, parent = drill
    archive = scratch / "damaged-archive"
    archive.mkdir()
    # The live archiver writes <segment>.part and renames it meanwhile: copy the archived files only, each once.
    for path in sorted(pg.archive_dir.iterdir()):
        if not path.name.endswith(".part"):
            try:
                shutil.copy2(path, archive / path.name)
                owner = path.stat()
            except FileNotFoundError:
                continue
            os.chown(archive / path.name, owner.st_uid, owner.st_gid)
    chown_postgres(archive)
    size = (archive / stop_wal_file).stat().st_size
    (archive / stop_wal_file).write_bytes(b"\0" * size)
    with pytest.raises(BackupError) as caught:
        run_drill(pg, backup_dir, parent, wal_archive_dir=str(archive))
    assert caught.value.facts["check_ran"] is True, caught.value.msg
    assert drill_processes(parent) == [], "the drill's own server is still running"
