"""PG 14, native API, tar + gzip: one complete backup that restores."""


def test_backup_complete_native(backups, in_backup, host, state):
    assert [r["status"] for r in backups.values()] == ["complete"]
    record = next(iter(backups.values()))
    assert record["api"] == "native" and record["label_fixed"] is False
    assert host.file(state["dest"] + "/" + record["label"] + "/base.tar.gz").exists
    assert not in_backup()


def test_backup_restores(backups, state, restore_check):
    result = restore_check(state["dest"] + "/" + next(iter(backups)))
    assert result["rows"] == {"before": 500}
