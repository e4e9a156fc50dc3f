from ansible_collections.pgexclusive.backup.plugins.module_utils import backup_api


def test_native_up_to_14():
    assert backup_api.choose_api(140023, False, "postgres") == ("native", None)
    assert backup_api.choose_api(100000, True, "postgres") == ("native", None)


def test_extension_from_15_only_where_installed():
    assert backup_api.choose_api(150020, True, "backupctl") == ("extension", None)
    api, reason = backup_api.choose_api(180001, False, "app")
    assert api == "none" and "'app'" in reason and "pg_exclusive_backup" in reason


def test_too_old():
    api, reason = backup_api.choose_api(90624, False, "postgres")
    assert api == "none" and "older than 10" in reason


def test_grant_statement_quotes_the_role():
    assert backup_api.grant_statement(["pg_catalog.pg_stop_backup()"], 'odd"role') == \
        'GRANT EXECUTE ON FUNCTION pg_catalog.pg_stop_backup() TO "odd""role";'


def test_concurrent_start_errors_of_both_apis():
    assert backup_api.is_concurrent_start_error("a backup is already in progress")
    assert backup_api.is_concurrent_start_error("exclusive backup is already in progress")
    assert not backup_api.is_concurrent_start_error("recovery is in progress")
    assert not backup_api.is_concurrent_start_error(None)


def test_extension_hint_names_both_ways_out():
    hint = backup_api.extension_hint("app")
    assert "CREATE EXTENSION pg_exclusive_backup" in hint and "create_extension: true" in hint and "'app'" in hint


def test_stop_limit_is_never_below_a_second():
    assert backup_api.stop_limit_ms(0) == 1000 and backup_api.stop_limit_ms(300) == 300000


def test_this_backup_in_progress_checks_label_and_start_lsn_as_the_stop_does():
    assert backup_api.THIS_BACKUP_IN_PROGRESS_SQL == backup_api.GUARDED_STOP_SQL["native"].replace(
        "(SELECT lsn::text FROM pg_catalog.pg_stop_backup(true, false))", "true")
    assert "pg_stop_backup" not in backup_api.THIS_BACKUP_IN_PROGRESS_SQL
