"""What a new user meets on the way to a first backup (issue 19), each finding against a real server and the role.

- dest read-only, full, or not writable by the user the modules run as (become_user postgres), and a
  copy method whose program is not installed: the preflight refuses, naming what and what to do, and
  nothing is started (no backup mode, no start task, no backup directory);
- a failed run whose backup.json could not be written says so and publishes record_written false; a
  copy killed mid-way leaves no staging area;
- --check claims no backup;
- the missing-extension hint with the default login database postgres sends the user to a dedicated one;
- a tar backup on 15 records a check command that says it needs pg_verifybackup 18, and runs with it.
"""

import json
import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from runner import run_role, start_role
from testbed import provide
from watchdogs import processes_with_label, wait_for

START_TASK = "Start the exclusive backup with this run's label"


def backup(pg, scratch, dest, **role_vars):
    role_vars.setdefault("exclusive_backup_verify_archiving", "passive")
    return run_role(pg, scratch, exclusive_backup_dest=str(dest), **role_vars)


def check_nothing_started(pg, run, dest):
    assert run.rc != 0
    assert "Nothing was started." in run.output, run.output[-4000:]
    assert START_TASK not in run.output, "the preflight must fail before the start"
    assert not pg.in_backup()
    assert not list(Path(dest).glob("pgx-*")), "no backup directory"


@pytest.fixture
def mounted(scratch):
    """mounted(options): a tmpfs of this test's own at a new directory, unmounted at the end."""
    points = []

    def mount(options):
        point = scratch / f"mnt{len(points)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "pgx-newcomer", str(point)], check=True)
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", str(point)], check=True)


def test_a_read_only_dest_is_refused_before_the_start(one_pg, scratch, mounted):
    dest = mounted("ro,size=1m")
    run = backup(one_pg, scratch, dest)
    check_nothing_started(one_pg, run, dest)
    assert f"The destination {dest} is not writable by root (uid 0), who writes the backup: Read-only file system" \
        in run.output, run.output[-4000:]


def test_a_dest_without_room_for_the_copy_is_refused_before_the_start(one_pg, scratch, mounted):
    dest = mounted("size=2m")
    run = backup(one_pg, scratch, dest / "backups")
    check_nothing_started(one_pg, run, dest)
    assert f"The destination {dest} has no room for the copy: 2.0 MiB free, and the copy of the data directory" \
        in run.output, run.output[-4000:]
    assert os.listdir(dest) == [], "the probe left nothing, and dest/backups was not created"


def test_a_dest_its_writer_may_not_write_is_refused(one_pg, scratch):
    """The modules run as postgres (become_user); dest belongs to root, 0755: root could write it, postgres cannot.

    The test's virtual environment is root's only: the modules run on the system Python with Debian's psycopg2.
    """
    dest = scratch / "root-only"
    dest.mkdir(mode=0o755)
    state = scratch / "state"
    state.mkdir()
    os.chown(state, *postgres_ids())
    run = backup(one_pg, scratch, dest, ansible_become=True, ansible_become_method="su", ansible_become_user="postgres",
                 ansible_python_interpreter="/usr/bin/python3", exclusive_backup_state_dir=str(state))
    check_nothing_started(one_pg, run, dest)
    uid = postgres_ids()[0]
    assert f"The destination {dest} is not writable by postgres (uid {uid}), who writes the backup: Permission denied" \
        in run.output, run.output[-4000:]


def postgres_ids():
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def path_without(scratch, program):
    """A PATH of one directory linking every program of this PATH but ``program``, as on a host without it."""
    bin_dir = scratch / f"bin-without-{program}"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory) / name
            if name != program and not (bin_dir / name).exists() and os.access(target, os.X_OK):
                (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def test_a_missing_rsync_is_refused_before_the_start(one_pg, scratch):
    dest = scratch / "backups"
    run = backup(one_pg, scratch, dest, exclusive_backup_method="rsync", env={"PATH": path_without(scratch, "rsync")})
    check_nothing_started(one_pg, run, dest)
    assert "The copy needs rsync (the rsync method), not found in the PATH of the database host" in run.output
    assert "apt-get install rsync" in run.output
    assert "No such file or directory: 'rsync'" not in run.output


def test_a_record_that_could_not_be_written_is_not_claimed(one_pg, scratch):
    """The copy command puts a file where the backup directory was and fails: backup.json cannot be written."""
    dest = scratch / "backups"
    label = "record-not-written"
    run = backup(one_pg, scratch, dest, exclusive_backup_label=label, exclusive_backup_method="command",
                 exclusive_backup_command='rm -rf "$PGX_BACKUP_DIR" && echo in-the-way > "$PGX_BACKUP_DIR" && exit 3')
    assert run.rc != 0
    assert "backup.json says failed" not in run.output, run.output[-4000:]
    assert f"backup.json could NOT be written in {dest / label}" in run.output, run.output[-4000:]
    assert run.result["status"] == "failed" and run.result["record_written"] is False, run.result
    assert run.result["stopped"] is True and not one_pg.in_backup()
    assert (dest / label).read_text() == "in-the-way\n", "nothing of the run's own replaced the user's file"


def test_a_copy_killed_mid_way_leaves_no_staging_area(one_pg, scratch):
    dest = scratch / "backups"
    label = "copy-killed"
    run = start_role(one_pg, scratch, exclusive_backup_dest=str(dest), exclusive_backup_label=label,
                     exclusive_backup_verify_archiving="passive", exclusive_backup_method="command",
                     exclusive_backup_command="sleep 3600")
    try:
        wait_for(lambda: processes_with_label(label), 60, run.proc.poll)
        assert (dest / label / ".staging" / "backup_label").is_file(), "the copy stages while its command runs"
        copy_pids = processes_with_label(label)
        # The module is the parent of the command's shell; it carries no PGX_LABEL itself.
        module = {parent_of(pid) for pid in copy_pids} - set(copy_pids)
        assert len(module) == 1, module
        os.kill(module.pop(), signal.SIGKILL)
        run.wait(120)
    finally:
        for pid in processes_with_label(label):
            os.kill(pid, signal.SIGKILL)
        run.cleanup()
    assert run.rc != 0 and run.result["status"] == "failed", run.output[-4000:]
    assert not (dest / label / ".staging").exists(), "the failure removed the killed copy's staging area"
    assert run.result["staging_left"] is None and run.result["record_written"] is True
    assert json.loads((dest / label / "backup.json").read_text())["status"] == "failed"
    assert not one_pg.in_backup()


def parent_of(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_check_mode_claims_no_backup(one_pg, scratch):
    dest = scratch / "backups"
    run = backup(one_pg, scratch, dest, args=["--check"])
    assert run.rc == 0, run.output[-4000:]
    assert "complete in" not in run.output, run.output[-4000:]
    assert "Check mode: the preflight checks passed; no backup was started, copied, stopped or recorded" in run.output
    assert run.result["status"] == "checked", run.result
    assert not dest.exists() and not one_pg.in_backup()


def test_the_missing_extension_hint_never_sends_the_user_to_postgres(one_pg, scratch):
    dest = scratch / "backups"
    run = backup(one_pg, scratch, dest, exclusive_backup_login_db="postgres")
    check_nothing_started(one_pg, run, dest)
    assert "extension is not installed in database 'postgres'" in run.output, run.output[-4000:]
    assert "Do not install it in postgres" in run.output
    assert "CREATE DATABASE backupctl" in run.output and "exclusive_backup_login_db: backupctl" in run.output
    assert "Install the pg_exclusive_backup extension in the login database" not in run.output
    assert not one_pg.value("SELECT count(*) FROM pg_extension WHERE extname = 'pg_exclusive_backup'")


def test_a_tar_backup_on_15_records_a_check_command_that_says_what_runs_it(one_pg, scratch):
    dest = scratch / "backups"
    run = backup(one_pg, scratch, dest)
    assert run.rc == 0, run.output[-4000:]
    verify = run.result["manifest"]["verify"]
    record = json.loads((dest / run.result["label"] / "backup.json").read_text())
    assert record["manifest"]["verify"] == verify
    assert "needs pg_verifybackup of PostgreSQL 18 or later" in verify, verify
    # As recorded, through a shell: 15's pg_verifybackup cannot run it, 18's passes.
    for major, ok in ((15, False), (18, True)):
        bindir = provide(major).bindir
        proc = subprocess.run(["sh", "-c", verify], env=dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}"),
                              capture_output=True, text=True, check=False)
        assert (proc.returncode == 0) == ok, (major, proc.stdout, proc.stderr)
        if not ok:
            assert "invalid option" in proc.stderr, proc.stderr
