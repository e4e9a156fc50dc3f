from ansible_collections.pgexclusive.backup.plugins.module_utils import restore_check as rc


def test_settings_never_archive_and_listen_only_on_the_socket():
    text = rc.settings_text(5999, "/w/sock", "/w/hba", "/w/ident", "cp /a/%f %p")
    assert "archive_mode = 'off'" in text and "listen_addresses = ''" in text
    assert "recovery_target = 'immediate'" in text and "port = 5999" in text
    assert "restore_command = 'cp /a/%f %p'" in text


def test_quote():
    assert rc.quote("it's") == "'it''s'"


def test_rewrite_tablespace_map():
    text = "16384 /old/a\n16385 /old/b\n"
    assert rc.rewrite_tablespace_map(text, {"16385": "/new/b"}) == "16384 /old/a\n16385 /new/b\n"
