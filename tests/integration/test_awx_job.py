"""playbooks/backup.yml run the way an AWX job template runs it.

ansible-runner with a private data directory (project, inventory, env/extravars
as a survey passes them, env/envvars), and the assertions AWX would make: the
job's status and rc, and the set_stats artifacts a workflow's next node sees.
"""

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import ansible_runner
import pytest

from watchdogs import live_processes

REPO = Path(__file__).resolve().parents[2]
JOB_ID = 4242


@pytest.fixture(autouse=True)
def venv_on_path(monkeypatch):
    """ansible-runner finds ansible-playbook on PATH, as in an execution environment."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")


@pytest.fixture
def pg15(clusters):
    cluster = clusters(15)
    if cluster.pid is None:
        cluster.start()
    yield cluster
    cluster.end_backup_if_any()


def job(private_data_dir, pg, dest, cancel=lambda: False, **survey):
    """Lay out a private data directory as AWX does and run the job template."""
    project = private_data_dir / "project"
    project.mkdir(parents=True)
    shutil.copy(REPO / "playbooks" / "backup.yml", project / "backup.yml")
    inventory = private_data_dir / "inventory"
    inventory.mkdir()
    (inventory / "hosts").write_text(
        f"[postgresql]\ndb1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    extravars = {
        # What AWX adds to every job's extra vars.
        "awx_job_id": JOB_ID, "tower_job_id": JOB_ID, "awx_job_template_name": "PostgreSQL backup",
        # What the survey passes (an integer question arrives as an integer).
        "exclusive_backup_dest": str(dest),
        "exclusive_backup_login_unix_socket": str(pg.socket_dir),
        "exclusive_backup_login_port": pg.port,
        "exclusive_backup_login_db": pg.backup_db,
        "exclusive_backup_wal_archive_dir": str(pg.archive_dir),
    }
    extravars.update(survey)
    env = private_data_dir / "env"
    env.mkdir()
    (env / "extravars").write_text(json.dumps(extravars))
    (env / "envvars").write_text(json.dumps({
        "ANSIBLE_COLLECTIONS_PATH": os.environ["ANSIBLE_COLLECTIONS_PATH"], "JOB_ID": str(JOB_ID)}))
    # A cancel_callback of our own: by default ansible-runner takes over SIGTERM and
    # SIGINT for the rest of the process, and the test bed could no longer stop its
    # servers when the test run is interrupted.
    return ansible_runner.run(private_data_dir=str(private_data_dir), playbook="backup.yml",
                              ident=f"job-{JOB_ID}", quiet=True, cancel_callback=cancel)


def artifacts(run):
    """The set_stats data AWX shows on the job and hands to the workflow."""
    stats = [e for e in run.events if e.get("event") == "playbook_on_stats"]
    assert stats, "the run ended without a stats event"
    return stats[-1]["event_data"].get("artifact_data", {})


def test_job_template_takes_a_verified_backup(pg15, scratch):
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    dest = scratch / "backups"
    run = job(scratch / "awx", pg15, dest, exclusive_backup_method="tar", exclusive_backup_include_wal=True,
              exclusive_backup_verify_restore=True)
    assert run.status == "successful", run.stdout.read()
    assert run.rc == 0
    result = artifacts(run)["exclusive_backup_results"]["db1"]
    assert result["status"] == "complete"
    assert f"awx{JOB_ID}" in result["label"], "the label carries the AWX job id"
    record = json.loads((Path(result["backup_dir"]) / "backup.json").read_text())
    assert record["status"] == "complete" and record["label"] == result["label"]
    assert not pg15.in_backup()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers, \
        "the test bed's own SIGTERM/SIGINT handling must survive ansible-runner"


def test_bad_extra_vars_fail_in_argument_validation_before_the_server(pg15, scratch):
    archived_before = pg15.value("SELECT archived_count FROM pg_stat_archiver")
    dest = scratch / "backups"
    run = job(scratch / "awx", pg15, dest, exclusive_backup_method="ftp")
    assert run.status == "failed" and run.rc != 0
    failed = [e for e in run.events if e.get("event") == "runner_on_failed"]
    assert failed, "no task failed"
    first = failed[0]["event_data"]
    assert first["task_action"] == "ansible.builtin.validate_argument_spec", first["task"]
    assert "exclusive_backup_method" in json.dumps(first["res"])
    assert not dest.exists(), "nothing was written"
    assert not pg15.in_backup()
    assert pg15.value("SELECT archived_count FROM pg_stat_archiver") == archived_before, "no WAL switch happened"
    assert artifacts(run)["exclusive_backup_results"]["db1"]["status"] == "failed"


def copy_commands(dest):
    """The copy command's processes: their environment names a backup directory under ``dest``."""
    wanted = f"PGX_BACKUP_DIR={dest}/".encode()
    return [pid for pid, environ in live_processes("environ") if any(item.startswith(wanted) for item in environ)]


def test_a_cancelled_job_leaves_backup_mode_when_its_lease_ends(pg15, scratch):
    """AWX's cancel as ansible-runner does it (SIGKILL to ansible-playbook's process group) mid-copy."""
    dest = scratch / "backups"
    state_dir = scratch / "state"
    cancelled = []

    def cancel():
        if not cancelled and copy_commands(dest):
            cancelled.append(time.time())
        return bool(cancelled)

    run = job(scratch / "awx", pg15, dest, cancel=cancel, exclusive_backup_method="command",
              exclusive_backup_command="sleep 3600", exclusive_backup_heartbeat_timeout=6,
              exclusive_backup_state_dir=str(state_dir), exclusive_backup_verify_archiving="passive")
    returned = time.time() - cancelled[0]
    assert run.status == "canceled", run.status
    assert pg15.in_backup(), "the cancel itself stops nothing"
    while pg15.in_backup() and time.time() - cancelled[0] < 6 + 1.5 + 8:
        time.sleep(0.2)
    left = time.time() - cancelled[0]
    assert not pg15.in_backup(), f"still in backup mode {left:.1f} s after the cancel"
    while copy_commands(dest) and time.time() - cancelled[0] < 30:
        time.sleep(0.2)
    assert not copy_commands(dest), "the orphaned copy ends with the lease"
    # The stop leaves backup mode, then waits for the archive of its last segment (as the real extension's
    # does); the watchdog records the outcome when it returns.
    record_file = next(state_dir.rglob("*.json"))
    while json.loads(record_file.read_text())["outcome"] == "running" and time.time() - cancelled[0] < left + 12:
        time.sleep(0.2)
    record = json.loads(record_file.read_text())
    assert record["outcome"] == "expired-stopped" and record["expired_by"] == "heartbeat", record
    print(f"\nMEASURED AWX cancel (ansible-runner), heartbeat_timeout 6 s: runner returned {returned:.1f} s, "
          f"backup mode left {left:.1f} s after the cancel")
