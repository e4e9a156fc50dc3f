"""PG 15, rsync with a tablespace: links kept as links, manifest accepted, restore holds the tablespace."""


def test_plain_copy_with_tablespace(backups, host, state):
    record = next(iter(backups.values()))
    assert record["status"] == "complete" and record["method"] == "rsync"
    oid = str(record["tablespaces"][0]["oid"])  # an integer, as every module reports it
    backup = state["dest"] + "/" + record["label"]
    assert host.file(backup + "/data/pg_tblspc/" + oid).is_symlink
    assert host.file(backup + "/tablespaces/" + oid).is_directory
    assert host.file(backup + "/data/tablespace_map").contains(state["tablespace"])


def test_pg_verifybackup_accepts_the_manifest(backups, host, state):
    backup = state["dest"] + "/" + next(iter(backups))
    out = host.run("/usr/lib/postgresql/15/bin/pg_verifybackup -n -m %s/backup_manifest %s/data", backup, backup)
    assert out.rc == 0, out.stdout + out.stderr


def test_backup_restores_with_its_tablespace(backups, state, restore_check):
    result = restore_check(state["dest"] + "/" + next(iter(backups)))
    assert result["rows"] == {"before": 500} and result["in_ts"] == 250
