"""The restore drill on real servers: the restore engine into a throwaway directory, the user's SQL checks,
the result kept in backup.json, the throwaway removed, the live server untouched.

One backup per major, taken by the role with its restore check and one check
(so the role's own drill starts the history); then playbooks/restore_drill.yml
with passing checks, and pg_verify_restore with a wrong ``expect`` and with no
pg_ctl, in one playbook run.
"""

import json

from live_checks import LiveCheck, read_record
from restore_proof import AFTER, BASE_ROWS, Writer, add_rows_after, create_table
from runner import REPO, ROLE_ENV, ansible_env, localhost_inventory, run_dir, run_playbook, run_role, run_tasks, task


def rows_check(db, expect=BASE_ROWS, name="rows from before the backup"):
    return {"name": name, "db": db, "sql": "SELECT count(*) FROM t WHERE phase = 'before'", "expect": expect}


def no_rows_after(db):
    return {"name": "no rows from after the stop", "db": db, "sql": f"SELECT count(*) FROM t WHERE id > {AFTER}",
            "expect": 0}


def throwaways(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("pgx-verify-"))


def test_drills_check_the_data_keep_a_history_and_leave_the_live_server_alone(pg, db, scratch):
    create_table(pg, db)
    dest = scratch / "backups"
    with Writer(pg, db) as writer:
        run = run_role(pg, scratch, exclusive_backup_dest=str(dest), exclusive_backup_verify_restore=True,
                       exclusive_backup_wal_archive_dir=str(pg.archive_dir),
                       exclusive_backup_verify_restore_checks=[rows_check(db)])
    assert writer.error is None, writer.error
    assert run.rc == 0, run.output[-6000:]
    add_rows_after(pg, db)
    backup_dir = dest / run.result["label"]
    record = read_record(backup_dir)
    assert record["status"] == "complete", record
    assert record["verify_restore"]["ok"] is True and record["verify_restore"]["check_ran"] is True
    assert [(e["ok"], e["checks"]) for e in record["checks"]] == [
        (True, [{"name": "rows from before the backup", "ok": True, "returned": str(BASE_ROWS)}])], record["checks"]
    live = LiveCheck(pg, db)

    # The standalone drill: the newest complete backup under dest, its data directory from backup.json.
    variables = {"drill_hosts": "localhost", "drill_dest": str(dest), "drill_wal_archive_dir": str(pg.archive_dir),
                 "drill_timeout": 180, "drill_checks": [rows_check(db), no_rows_after(db)]}
    vars_file = scratch / "drill-vars.json"
    vars_file.write_text(json.dumps(variables))
    drill = run_playbook(REPO / "playbooks" / "restore_drill.yml", localhost_inventory(scratch / "inventory.yml"),
                         run_dir(scratch, "drill"), args=("-e", f"@{vars_file}"), env=ansible_env(**ROLE_ENV))
    assert drill.rc == 0, drill.output[-6000:]
    assert f"Backup {backup_dir} restored in" in drill.output and "all passed" in drill.output, drill.output[-3000:]
    assert "Kept in backup.json: True" in drill.output

    # A wrong expect fails the drill naming the check; a drill without pg_ctl could not run.
    wrong = rows_check(db, expect=BASE_ROWS + 1, name="a wrong count")
    failing, unrunnable = run_tasks([
        task("pg_verify_restore", backup_dir=str(backup_dir), wal_archive_dir=str(pg.archive_dir), timeout=180,
             checks=[wrong, no_rows_after(db)]),
        task("pg_verify_restore", backup_dir=str(backup_dir), bindir=str(scratch / "no-bin"), checks=[wrong]),
    ])
    assert failing.get("failed") and failing["check_ran"] is True, failing
    message = failing["msg"]
    assert "failed the check 'a wrong count'" in message and wrong["sql"] in message, message
    assert f"returned '{BASE_ROWS}', expected '{BASE_ROWS + 1}'" in message, message
    assert [(c["name"], c["ok"]) for c in failing["checks"]] == [
        ("a wrong count", False), ("no rows from after the stop", True)]
    assert failing["history_written"] is True
    assert unrunnable.get("failed") and unrunnable["check_ran"] is False, unrunnable
    assert "could not run" in unrunnable["msg"] and "This says nothing about the backup itself" in unrunnable["msg"]
    assert "not restorable" not in unrunnable["msg"]

    record = read_record(backup_dir)
    assert record["status"] == "complete", "a drill never changes the backup's status"
    history = record["checks"]
    assert [(e["ok"], e["check_ran"]) for e in history] == [(True, True), (True, True), (False, True), (False, False)]
    assert [c["returned"] for c in history[1]["checks"]] == [str(BASE_ROWS), "0"]
    assert "a wrong count" in history[2]["error"] and history[2]["checks"][0]["returned"] == str(BASE_ROWS)
    assert all(e["time"] and e["duration"] >= 0 for e in history)

    assert throwaways(dest) == [], "every throwaway directory is removed"
    assert pg.value("SELECT count(*) FROM t WHERE phase = 'before'", dbname=db) == BASE_ROWS
    live.finish(crash=False)
