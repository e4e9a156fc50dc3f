from ansible_collections.pgexclusive.backup.plugins.module_utils.archive_check import restore_point_name


def test_restore_point_name_fits():
    assert restore_point_name("x") == "pgx-verify x"
    assert len(restore_point_name("é" * 100).encode("utf-8")) <= 63
