"""The pure parts of the preflight phase: what it refuses before anything starts, and what it measures."""

import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import preflight as p
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def test_dest_inside_the_data_directory_is_found_through_links(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(data / "sub")
    assert p.is_inside(str(link), str(data))
    assert p.is_inside(str(data), str(data))
    assert not p.is_inside(str(tmp_path / "data-backups"), str(data))
    with pytest.raises(BackupError, match="inside the data directory .* Nothing was started"):
        p.refuse_dest_inside(str(link), str(data))


def test_the_backup_dir_is_dest_and_label():
    assert p.backup_dir_of("/srv/backups/", "L") == "/srv/backups/L"
    assert p.backup_dir_of("/", "L") == "/L"


def test_an_earlier_backup_under_the_label_is_refused(tmp_path):
    p.refuse_earlier_backup(str(tmp_path / "L"))
    (tmp_path / "L").mkdir()
    (tmp_path / "L" / "backup.json").write_text("{}")
    with pytest.raises(BackupError, match="already holds a backup"):
        p.refuse_earlier_backup(str(tmp_path / "L"))


def test_a_standby_or_a_server_without_api_is_refused():
    primary = {"in_recovery": False, "api": "extension", "api_reason": None}
    p.refuse_server(primary, False, "postgres")
    with pytest.raises(BackupError, match="standby"):
        p.refuse_server(dict(primary, in_recovery=True), True, "postgres")
    with pytest.raises(BackupError, match="No exclusive backup API in backupctl"):
        p.refuse_server(dict(primary, api="none"), False, "backupctl")
    p.refuse_server(dict(primary, api="none"), True, "backupctl")


def test_an_unknown_data_directory_is_refused_with_the_grant():
    assert p.data_directory_of("/given", {"data_directory": "/server"}, "u") == "/given"
    assert p.data_directory_of(None, {"data_directory": "/server"}, "u") == "/server"
    with pytest.raises(BackupError, match="GRANT pg_monitor TO backup_user"):
        p.data_directory_of(None, {"data_directory": None}, "backup_user")


def test_the_programs_each_method_needs():
    assert p.tools_needed("tar", "none", "", False) == [("tar", "the tar method")]
    assert [t for t, _w in p.tools_needed("tar", "zstd", "", True)] == ["tar", "zstd"]
    # The copy gzips with zlib; only the WAL archive runs gzip.
    assert [t for t, _w in p.tools_needed("tar", "gzip", "", False)] == ["tar"]
    assert [t for t, _w in p.tools_needed("tar", "gzip", "", True)] == ["tar", "gzip"]
    assert [t for t, _w in p.tools_needed("rsync", "none", "backup@repo1:/srv/pg", False)] == ["rsync", "ssh"]
    assert [t for t, _w in p.tools_needed("rsync", "none", "/mnt/local-target", False)] == ["rsync"]
    assert p.tools_needed("copy", "none", "", False) == [] and p.tools_needed("command", "none", "", False) == []


def test_a_missing_program_is_named_with_what_needs_it_and_its_package():
    p.refuse_missing_tools([("tar", "the tar method")], which=lambda tool: "/usr/bin/" + tool)
    with pytest.raises(BackupError) as caught:
        p.refuse_missing_tools([("rsync", "the rsync method"), ("ssh", "the repository r:/x")],
                               which=lambda tool: None)
    assert "The copy needs rsync (the rsync method), ssh (the repository r:/x), not found in the PATH" in caught.value.msg
    assert caught.value.msg.endswith("Nothing was started.")
    assert "apt-get install openssh-client rsync" in caught.value.hint


def test_room_refuses_a_plain_copy_that_cannot_fit_and_warns_for_a_compressed_one():
    assert p.room_verdict(100, 100, False) is None
    text, refuse = p.room_verdict(200 * p.MIB, 100 * p.MIB, False)
    assert refuse and text == ("100.0 MiB free, and the copy of the data directory and its tablespaces takes "
                               "about 200.0 MiB.")
    text, refuse = p.room_verdict(200 * p.MIB, 100 * p.MIB, True)
    assert not refuse and text.endswith("before compression: it may not fit.")


def test_the_copy_size_leaves_out_what_the_copy_leaves_out_and_counts_tablespaces(tmp_path):
    data = tmp_path / "data"
    for name, size in (("base/1/1259", 5000), ("global/pg_control", 300), ("pg_wal/000000010000000000000001", 7000),
                       ("postmaster.pid", 50), ("base/pgsql_tmp/pgsql_tmp1.0", 900)):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(b"x" * size)
    space = tmp_path / "space"
    (space / "PG_15_1").mkdir(parents=True)
    (space / "PG_15_1" / "16384").write_bytes(b"x" * 1000)
    (data / "pg_tblspc").mkdir()
    (data / "pg_tblspc" / "16500").symlink_to(space)
    assert p.copy_size(str(data)) == 5000 + 300 + 1000


def test_the_writer_is_tried_in_the_nearest_existing_directory(tmp_path):
    assert p.existing_parent(str(tmp_path / "not" / "yet" / "L")) == str(tmp_path)
    assert p.refuse_unwritable(str(tmp_path / "L"), False) == str(tmp_path)
    assert os.listdir(tmp_path) == [], "the probe leaves nothing behind"
    (tmp_path / "file").write_text("")
    with pytest.raises(BackupError, match="file is not writable by .*it is not a directory. Nothing was started"):
        p.refuse_unwritable(str(tmp_path / "file" / "L"), False)


def test_the_missing_extension_hint_never_sends_the_user_to_postgres():
    hint = p.extension_hint("postgres")
    assert "Do not install it in postgres" in hint and "exclusive_backup_login_db: backupctl" in hint
    assert "CREATE DATABASE backupctl" in hint
    assert "Install the pg_exclusive_backup extension in backupctl" in p.extension_hint("backupctl")
    with pytest.raises(BackupError) as caught:
        p.refuse_server({"in_recovery": False, "api": "none", "api_reason": None}, False, "postgres")
    assert "Do not install it in postgres" in caught.value.hint


def preflight_params(**changes):
    params = dict((name, spec.get("default")) for name, spec in p.preflight_argument_spec().items())
    params.update(dest="/nonexistent/backups", label="L")
    params.update(changes)
    return params


def test_copy_options_are_refused_before_anything_is_looked_at():
    with pytest.raises(BackupError) as caught:
        p.preflight(preflight_params(method="command"), False)
    assert caught.value.msg == "The command method needs a command. Nothing was started."
    assert caught.value.hint == "Set exclusive_backup_command."
    with pytest.raises(BackupError, match="include_wal needs wal_archive_dir. Nothing was started."):
        p.preflight(preflight_params(include_wal=True), False)
    with pytest.raises(BackupError, match="Both exclusive_backup_repository and exclusive_backup_rsync_target"):
        p.preflight(preflight_params(method="rsync", repository="h:/a", rsync_target="h:/b"), False)
    p.refuse_copy_options(preflight_params(method="rsync", rsync_target="h:/b", parallel=2))
