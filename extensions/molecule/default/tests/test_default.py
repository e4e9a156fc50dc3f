"""PG 15 + extension, tar: one complete backup that restores, with the label fixed in the copy."""


def test_one_complete_backup_and_server_out_of_backup_mode(backups, in_backup, failure):
    assert failure is None
    assert [r["status"] for r in backups.values()] == ["complete"]
    record = next(iter(backups.values()))
    assert record["api"] == "extension" and record["method"] == "tar" and record["label_fixed"] is True
    assert not in_backup()


def test_backup_restores_with_recovery_target_immediate(backups, state, restore_check):
    label = next(iter(backups))
    result = restore_check(state["dest"] + "/" + label)
    assert result["rows"] == {"before": 500}
    assert result["label_method_streamed"] is True
