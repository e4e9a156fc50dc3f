"""The role's five phases on the database host: one module call each, and the finalize phase's failures.

A default backup and one with every option run exactly preflight, start, copy,
stop and finalize there (counted from ansible-playbook's own -vvv lines, one
"Using module file" per module run). A failed finalize step leaves backup.json
saying failed and naming the step; a failed retention comes after a complete
backup, which stays complete. The live server is out of backup mode after each.
"""

import json
import os
import re
import subprocess

import pytest

from runner import run_role
from testbed.fixtures import handed_out, prefer

PHASES = ["pg_backup_preflight", "pg_start_backup", "pg_backup_copy", "pg_stop_backup", "pg_backup_finalize"]


@pytest.fixture(params=prefer((14, 15)), ids=lambda m: f"pg{m}")
def phases_pg(request, clusters):
    yield from handed_out(clusters(request.param))


def modules_run(output):
    return re.findall(r"Using module file \S+/plugins/modules/(\w+)\.py", output)


def test_a_default_backup_runs_one_module_per_phase(phases_pg, scratch, monkeypatch):
    pg = phases_pg
    monkeypatch.setenv("ANSIBLE_VERBOSITY", "3")
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"))
    assert run.rc == 0, run.output[-5000:]
    assert modules_run(run.output) == PHASES
    assert run.result["record"]["status"] == "complete"
    assert not pg.in_backup()


def test_every_option_still_runs_one_module_per_phase_and_the_restore_check_restores(phases_pg, scratch, monkeypatch):
    """Also with a dest path and a label long enough that a socket beside the backup would pass 107 bytes."""
    pg = phases_pg
    dest = scratch / ("backups-" + "d" * 80)
    monkeypatch.setenv("ANSIBLE_VERBOSITY", "3")
    first = run_role(pg, scratch, exclusive_backup_dest=str(dest), exclusive_backup_verify_archiving="passive")
    assert first.rc == 0, first.output[-5000:]
    run = run_role(pg, scratch, exclusive_backup_dest=str(dest), exclusive_backup_method="rsync",
                   exclusive_backup_label="nightly-" + "l" * 150,
                   exclusive_backup_include_wal=True, exclusive_backup_wal_archive_dir=str(pg.archive_dir),
                   exclusive_backup_verify_restore=True, exclusive_backup_retention=1)
    assert run.rc == 0, run.output[-5000:]
    assert modules_run(run.output) == PHASES
    record = run.result["record"]
    assert record["status"] == "complete" and record["wal_included"]
    assert record["verify_restore"]["ok"] is True and record["verify_restore"]["check_ran"] is True
    assert run.result["manifest"]["path"].endswith("backup_manifest")
    assert run.result["removed"] == [first.result["label"]]
    assert sorted(os.listdir(dest)) == [run.result["label"]]
    assert "Seconds per step: {" in run.output and "'verify_restore':" in run.output
    assert not pg.in_backup()


def test_a_failed_finalize_step_records_failed_naming_it(phases_pg, scratch):
    """The WAL archive given is the wrong directory: the backup is stopped, backup.json says failed at the wal step."""
    pg = phases_pg
    wrong_archive = scratch / "not-the-archive"
    wrong_archive.mkdir()
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"), exclusive_backup_include_wal=True,
                   exclusive_backup_wal_archive_dir=str(wrong_archive))
    assert run.rc != 0
    assert "The backup is not complete: its wal step failed: WAL segment" in run.output
    assert "backup.json says failed" in run.output
    assert run.result["status"] == "failed" and run.result["stopped"] and run.result["record_written"]
    record = json.loads((scratch / "backups" / run.result["label"] / "backup.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("wal: WAL segment")
    assert record["stop_lsn"], "the failed record keeps what the run knew"
    assert not pg.in_backup()
    assert not os.listdir(wrong_archive), "nothing was written into the directory taken for the archive"


def test_a_failed_retention_leaves_the_new_backup_complete(phases_pg, scratch):
    """An old backup holds a busy mount point: its removal fails, after the new backup is complete."""
    pg = phases_pg
    dest = scratch / "backups"
    first = run_role(pg, scratch, exclusive_backup_dest=str(dest), exclusive_backup_verify_archiving="passive")
    assert first.rc == 0, first.output[-5000:]
    busy = dest / first.result["label"] / "busy"
    busy.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pgx-busy", str(busy)], check=True)
    try:
        run = run_role(pg, scratch, exclusive_backup_dest=str(dest), exclusive_backup_retention=1,
                       exclusive_backup_verify_archiving="passive")
    finally:
        subprocess.run(["umount", str(busy)], check=True)
    assert run.rc != 0
    assert "is complete, but retention failed: Retention could not remove the backup" in run.output
    assert run.result["status"] == "complete" and "retention failed" in run.result["retention_error"]
    labels = sorted(p.name for p in dest.iterdir())
    new = [name for name in labels if name != first.result["label"]]
    assert len(new) == 1, labels
    record = json.loads((dest / new[0] / "backup.json").read_text())
    assert record["status"] == "complete"
    assert not (dest / first.result["label"] / "backup.json").exists(), \
        "the half-removed backup no longer claims to be complete"
    assert new == [run.result["label"]]
    assert not pg.in_backup()
