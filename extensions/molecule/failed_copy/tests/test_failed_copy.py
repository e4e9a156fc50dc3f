"""A failed copy: the play failed, the server is out of backup mode, backup.json says failed."""


def test_play_failed_with_the_copy_error(failure):
    assert failure and "rsync exited with" in failure


def test_server_out_of_backup_mode(in_backup):
    assert not in_backup()


def test_backup_json_says_failed(backups):
    assert [r["status"] for r in backups.values()] == ["failed"]
    record = next(iter(backups.values()))
    assert "rsync" in record["error"] and record["stop_lsn"]
