"""The exclusive_backup role end to end: a backup counts as good only when it restored.

Each test runs the role through the real ansible-playbook against a test bed
server while a writer commits rows, then restores the backup with
recovery_target = 'immediate' and checks the rows against the stop LSN.
"""

import json
import os
import subprocess

from restore_proof import (Writer, add_rows_after, check_restored_rows, check_rows_against_stop, create_table,
                           extract, materialize, restore_backup, restored_ids)
from runner import REPO, run_role


def backup_with_writer(pg, db, scratch, **role_vars):
    create_table(pg, db)
    with Writer(pg, db) as writer:
        run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"), **role_vars)
    assert writer.error is None, writer.error
    add_rows_after(pg, db)
    assert run.rc == 0, run.output[-6000:]
    return run, writer


def test_tar_backup_restores_with_recovery_target_immediate(pg, db, scratch, restore):
    run, writer = backup_with_writer(pg, db, scratch)
    result = run.result
    assert result["status"] == "complete"
    backup_dir = scratch / "backups" / result["label"]
    record = json.loads((backup_dir / "backup.json").read_text())
    assert record["status"] == "complete" and record["label"] == result["label"]
    assert record["api"] == pg.api and record["method"] == "tar"
    assert not pg.in_backup(), "the role must leave the server out of backup mode"
    copy = extract(backup_dir / "base.tar", scratch / "copy")
    label = (copy / "backup_label").read_text()
    assert f"LABEL: {result['label']}" in label
    if pg.major >= 15:
        assert "BACKUP METHOD: streamed" in label, label
    assert not (copy / "postmaster.pid").exists()
    check_restored_rows(restore(pg, copy), db, writer, record["stop_lsn"])


def test_failed_copy_stops_the_backup_and_records_failed(pg, scratch):
    label = f"failing-copy-{pg.major}"
    backup_dir = scratch / "backups" / label
    # tar cannot write base.tar when a directory of that name is in the way: a real tar failure (exit 2).
    (backup_dir / "base.tar").mkdir(parents=True)
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"), exclusive_backup_label=label)
    assert run.rc != 0
    assert "The backup %s failed" % label in run.output and "tar exited with 2" in run.output, run.output[-4000:]
    assert not pg.in_backup(), "after a failed copy the server must be out of backup mode"
    record = json.loads((backup_dir / "backup.json").read_text())
    assert record["status"] == "failed" and "tar" in record["error"]
    assert record["stop_lsn"], "the failed record still names the stop"
    assert run.result["status"] == "failed"


def test_failed_command_copy_stops_the_backup(api_pg, scratch):
    pg = api_pg
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"),
                   exclusive_backup_method="command",
                   exclusive_backup_command="echo snapshot tool broke >&2; exit 3")
    assert run.rc != 0 and "snapshot tool broke" in run.output
    assert not pg.in_backup()
    record = json.loads((scratch / "backups" / run.result["label"] / "backup.json").read_text())
    assert record["status"] == "failed"


def test_another_runs_backup_is_left_alone(pg, scratch):
    pg.start_backup("someone else's backup")
    try:
        run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"))
        assert run.rc != 0
        assert "someone else's backup" in run.output, run.output[-4000:]
        assert pg.in_backup(), "the other run's backup must still be in progress"
        assert "LABEL: someone else's backup" in pg.backup_label()
        assert "This run started no backup and stopped none" in run.output
        assert not (scratch / "backups").exists() or not any((scratch / "backups").iterdir())
    finally:
        pg.stop_backup()


def test_broken_archiving_refuses_to_start(pg, scratch):
    pg.break_archiving()
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"), exclusive_backup_archive_timeout=3)
    assert run.rc != 0
    assert "no backup was started" in run.output, run.output[-4000:]
    assert not pg.in_backup()
    assert not (scratch / "backups").exists()


def test_plain_backup_with_tablespace_wal_manifest_and_restore_check(pg, db, scratch, restore):
    # Both plain methods on every major would double the slowest test: alternate them.
    method = "rsync" if pg.major in (14, 16) else "copy"
    name = f"ts_{method}_{db}"
    location = pg.create_tablespace(name)
    try:
        pg.sql(f"CREATE TABLE in_ts (id int) TABLESPACE {name}", dbname=db)
        pg.sql("INSERT INTO in_ts SELECT generate_series(1, 500)", dbname=db)
        run, writer = backup_with_writer(
            pg, db, scratch, exclusive_backup_method=method, exclusive_backup_include_wal=True,
            exclusive_backup_wal_archive_dir=str(pg.archive_dir), exclusive_backup_verify_restore=True,
            # Two workers: the parallel copy must verify and restore like one stream (rsync ignores it).
            exclusive_backup_parallel=2)
        backup_dir = scratch / "backups" / run.result["label"]
        record = json.loads((backup_dir / "backup.json").read_text())
        assert record["verify_restore"]["ok"] is True
        assert record["wal_included"] and record["stop_wal_file"] in record["wal_included"]
        data = backup_dir / "data"
        oid = str(record["tablespaces"][0]["oid"])
        link = data / "pg_tblspc" / oid
        assert link.is_symlink(), "the tablespace link stays a link"
        assert (backup_dir / "tablespaces" / oid).is_dir()
        assert (data / "tablespace_map").read_text().startswith(f"{oid} {location}")
        # pg_verifybackup of the major (15+ ship it); 14's npm build has none: use 15's, the format is the same.
        tool = pg.inst.bindir / "pg_verifybackup"
        if not tool.exists():
            tool = "/usr/lib/postgresql/15/bin/pg_verifybackup"
        check = subprocess.run([str(tool), "-m", str(backup_dir / "backup_manifest"), str(data)]
                               + (["-n"] if pg.major < 15 else []), capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        # The restore check passed; restore it here too, relocating the tablespace.
        restored, _seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
        assert restored.value("SELECT count(*) FROM in_ts", dbname=db) == 500
        check_rows_against_stop(writer, restored_ids(restored, db), record["stop_lsn"])
    finally:
        pg.sql(f"DROP DATABASE IF EXISTS {db}")
        pg.sql(f"DROP TABLESPACE IF EXISTS {name}")


def test_tar_zstd_with_tablespace_self_contained(pg, db, scratch, restore):
    """tar + zstd, a tablespace, the WAL in pg_wal.tar.zst: restores without the archive."""
    name = f"ts_tar_{db}"
    pg.create_tablespace(name)
    try:
        pg.sql(f"CREATE TABLE in_ts (id int) TABLESPACE {name}", dbname=db)
        pg.sql("INSERT INTO in_ts SELECT generate_series(1, 300)", dbname=db)
        run, writer = backup_with_writer(
            pg, db, scratch, exclusive_backup_compression="zstd", exclusive_backup_include_wal=True,
            exclusive_backup_wal_archive_dir=str(pg.archive_dir), exclusive_backup_verify_restore=True,
            exclusive_backup_parallel=2)   # zstd -T2: plain tar --zstd must still read it
        backup_dir = scratch / "backups" / run.result["label"]
        record = json.loads((backup_dir / "backup.json").read_text())
        oid = str(record["tablespaces"][0]["oid"])
        names = sorted(p.name for p in backup_dir.iterdir())
        assert names == sorted(["backup.json", "backup_manifest", "base.tar.zst", f"{oid}.tar.zst", "pg_wal.tar.zst"]), names
        assert record["verify_restore"]["ok"] is True
        # Restore here without any archive: only what the backup holds.
        copy, tablespaces = materialize(backup_dir, scratch / "restore")
        assert list(tablespaces) == [oid] and any((copy / "pg_wal").iterdir()), "the WAL and the tablespace"
        empty_archive = scratch / "no-archive"
        empty_archive.mkdir()
        restored = restore(type("NoArchive", (), {"inst": pg.inst, "archive_dir": empty_archive})(), copy)
        assert restored.value("SELECT count(*) FROM in_ts", dbname=db) == 300
        check_rows_against_stop(writer, restored_ids(restored, db), record["stop_lsn"])
    finally:
        pg.sql(f"DROP DATABASE IF EXISTS {db}")
        pg.sql(f"DROP TABLESPACE IF EXISTS {name}")


def test_command_method_snapshot_restores_with_the_label_the_role_gives(one_ext_pg, scratch, restore):
    """command on 15+: the role cannot fix the snapshot's label, it hands over backup_label.restorable."""
    pg = one_ext_pg
    db = pg.create_database()
    try:
        snap = "tar -C \"$PGX_DATA_DIRECTORY\" -cf \"$PGX_BACKUP_DIR/snapshot.tar\" --exclude=./postmaster.pid " \
               "--exclude='./pg_wal/*' . || [ $? -eq 1 ]"
        run, writer = backup_with_writer(pg, db, scratch, exclusive_backup_method="command",
                                         exclusive_backup_command=snap)
        assert "BACKUP METHOD: streamed" in run.output, "the role tells what to change in the snapshot"
        backup_dir = scratch / "backups" / run.result["label"]
        record = json.loads((backup_dir / "backup.json").read_text())
        copy = extract(backup_dir / "snapshot.tar", scratch / "copy")
        assert "BACKUP METHOD: pg_start_backup" in (copy / "backup_label").read_text()
        (copy / "backup_label").write_text((backup_dir / "backup_label.restorable").read_text())
        restored = restore(pg, copy)
        check_rows_against_stop(writer, restored_ids(restored, db), record["stop_lsn"])
    finally:
        pg.drop_database(db)


def test_playbook_retention_and_set_stats(one_pg, scratch):
    """playbooks/backup.yml: hosts from a variable, retention keeps the newest, set_stats publishes."""
    pg = one_pg
    dest = scratch / "backups"
    this_cluster = {"system_identifier": str(pg.value("SELECT system_identifier FROM pg_control_system()")),
                    "data_directory": os.path.realpath(pg.data_dir), "host": "localhost"}
    other_cluster = dict(this_cluster, system_identifier="1")
    # Older by start LSN (what retention orders by), each with a copy whose own backup_label agrees.
    for label, status, start, cluster in (
            ("old-1", "complete", "0/1000028", this_cluster),
            ("old-2", "complete", "0/1800028", this_cluster),
            ("old-failed", "failed", "0/1900028", this_cluster),
            ("other-cluster", "complete", "0/1000028", other_cluster),
            ("old-format", "complete", "0/1000028", {})):
        (dest / label / "data").mkdir(parents=True)
        (dest / label / "data" / "backup_label").write_text(
            "START WAL LOCATION: %s (file 000000010000000000000001)\n" % start)
        (dest / label / "backup.json").write_text(json.dumps(
            dict(cluster, label=label, status=status, start_lsn=start, finished_at="2099-01-01T00:00:00Z")))
    (dest / "not-a-backup").mkdir()
    run = run_role(pg, scratch, playbook=REPO / "playbooks" / "backup.yml", env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"},
                   exclusive_backup_hosts="localhost", exclusive_backup_dest=str(dest), exclusive_backup_retention=2,
                   exclusive_backup_verify_archiving="passive", awx_job_id=4242)
    assert run.rc == 0, run.output[-5000:]
    assert "CUSTOM STATS" in run.output and "exclusive_backup_results" in run.output
    left = sorted(p.name for p in dest.iterdir())
    assert "old-1" not in left, left
    assert {"old-2", "old-failed", "not-a-backup", "other-cluster", "old-format"} <= set(left) and len(left) == 6, left
    assert "Removed by retention: old-1" in run.output
    assert any(name.startswith("pgx-localhost-awx4242-") for name in left), "the label carries the AWX job id"


def test_wal_not_archived_after_the_stop_fails_and_records_failed(pg, scratch):
    """Archiving breaks during the backup: the backup is stopped, backup.json says failed, the play fails."""
    pg.break_archiving()
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"),
                   exclusive_backup_verify_archiving="skip", exclusive_backup_archive_timeout=3)
    assert run.rc != 0
    assert "verify_archiving is skip: nothing proves" in run.output
    assert not pg.in_backup(), "the backup is stopped even though its WAL is not archived"
    record = json.loads((scratch / "backups" / run.result["label"] / "backup.json").read_text())
    assert record["status"] == "failed" and record["error"]


def test_same_label_started_by_another_run_is_left_alone(api_pg, scratch):
    """pg_start_backup is idempotent for one label; the role still never adopts a backup it did not start."""
    pg = api_pg
    pg.start_backup("nightly")
    try:
        run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"), exclusive_backup_label="nightly")
        assert run.rc != 0
        assert "another run uses the same label" in run.output, run.output[-4000:]
        assert pg.in_backup() and "LABEL: nightly" in pg.backup_label()
        assert not (scratch / "backups" / "nightly" / "base.tar").exists()
    finally:
        pg.stop_backup()
