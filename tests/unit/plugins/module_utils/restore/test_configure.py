from ansible_collections.pgexclusive.backup.plugins.module_utils import restore


def test_needs_label_fix_only_on_15_and_later():
    label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nBACKUP METHOD: pg_start_backup\n"
    assert restore.needs_label_fix(label, 15) and restore.needs_label_fix(label, 18)
    assert not restore.needs_label_fix(label, 14)
    assert not restore.needs_label_fix(label.replace("pg_start_backup", "streamed"), 16)
