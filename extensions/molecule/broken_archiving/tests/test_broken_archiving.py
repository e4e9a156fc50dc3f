"""Broken archiving: no backup was started."""


def test_role_refused_to_start(failure):
    assert failure and "no backup was started" in failure


def test_no_backup_in_progress_and_none_written(in_backup, backups):
    assert not in_backup()
    assert backups == {}
