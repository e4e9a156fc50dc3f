"""Another run's backup in progress: the role fails and leaves it alone."""


def test_role_failed_naming_the_other_backup(failure):
    assert failure and "another run's backup" in failure
    assert "started no backup and stopped none" in failure


def test_other_backup_still_in_progress(in_backup, host, state):
    assert in_backup()
    assert host.file(state["data_dir"] + "/backup_label").contains("LABEL: another run's backup")


def test_no_backup_written(backups):
    assert backups == {}
