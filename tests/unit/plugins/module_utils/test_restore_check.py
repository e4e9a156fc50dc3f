import os
import tarfile

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore_check as rc
from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_files import EMPTY_DIRS
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def settings(text):
    return dict(line.split(" = ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_settings_are_the_whole_minimal_configuration():
    conf = settings(rc.settings_text(5999, "/w/sock", "/w/hba", "/w/ident", "cp '/a'/%f %p"))
    assert conf == {
        "port": "5999",
        "listen_addresses": "''",
        "unix_socket_directories": "'/w/sock'",
        "archive_mode": "'off'",
        "hba_file": "'/w/hba'",
        "ident_file": "'/w/ident'",
        "logging_collector": "'off'",
        "ssl": "'off'",
        "recovery_target": "'immediate'",
        "recovery_target_action": "'promote'",
        "restore_command": "'cp ''/a''/%f %p'",
        "cluster_name": "'pgexclusive-verify-restore'",
        "max_connections": "10",
        "shared_buffers": "'16MB'",
        "hot_standby": "'off'",
        "fsync": "'off'",
    }


def test_restore_command_only_reads_the_archive():
    assert rc.restore_command_for("/srv/wal archive/") == "cp '/srv/wal archive'/%f %p"
    assert rc.restore_command_for("/a/it's 100%") == "cp '/a/it'\"'\"'s 100%%'/%f %p"


def test_restore_command_without_archive_reads_nothing():
    assert rc.restore_command_for(None) == "false"


def test_quote():
    assert rc.quote("it's") == "'it''s'"


def test_rewrite_tablespace_map():
    text = "16384 /old/a\n16385 /old/b\n"
    assert rc.rewrite_tablespace_map(text, {"16385": "/new/b"}) == "16384 /old/a\n16385 /new/b\n"


def test_tablespaces_without_copy():
    text = "16384 /live/a\n16385 /live/b\n"
    assert rc.tablespaces_without_copy(text, {"16385": "/w/t/16385"}) == [{"oid": 16384, "name": None, "location": "/live/a", "path": "/live/a"}]
    assert rc.tablespaces_without_copy(text, {"16384": "/w/a", "16385": "/w/b"}) == []


@pytest.fixture
def live_wal(tmp_path):
    """A directory standing for the live server's WAL, with a segment in it."""
    wal = tmp_path / "live-wal"
    wal.mkdir()
    (wal / "000000010000000000000003").write_text("live segment")
    return wal


def test_real_directory_replaces_the_pg_wal_link_without_touching_its_target(tmp_path, live_wal):
    pg_wal = tmp_path / "data" / "pg_wal"
    pg_wal.parent.mkdir()
    pg_wal.symlink_to(live_wal)
    rc.real_directory(str(pg_wal))
    assert pg_wal.is_dir() and not pg_wal.is_symlink() and list(pg_wal.iterdir()) == []
    assert (live_wal / "000000010000000000000003").read_text() == "live segment"


def test_real_directory_replaces_a_file_and_a_dangling_link_and_creates_a_missing_one(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("file", "dangling", "missing"):
        rc.real_directory(str(tmp_path / name))
        assert (tmp_path / name).is_dir() and not (tmp_path / name).is_symlink()


def test_real_directory_keeps_a_real_one_with_the_backups_wal(tmp_path):
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    (pg_wal / "000000010000000000000002").write_text("included WAL")
    rc.real_directory(str(pg_wal))
    assert (pg_wal / "000000010000000000000002").read_text() == "included WAL"


def test_relink_tablespaces_points_every_link_into_the_copy(tmp_path):
    data = tmp_path / "work" / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "pg_tblspc" / "16384").symlink_to(tmp_path / "live-ts")
    (data / "pg_tblspc" / "16390").mkdir()   # in place
    copies = {"16384": str(tmp_path / "work" / "ts" / "16384"), "16385": str(tmp_path / "work" / "ts" / "16385")}
    rc.relink_tablespaces(str(data), copies)
    assert os.readlink(str(data / "pg_tblspc" / "16384")) == copies["16384"]
    assert os.readlink(str(data / "pg_tblspc" / "16385")) == copies["16385"]
    assert (data / "pg_tblspc" / "16390").is_dir() and not (data / "pg_tblspc" / "16390").is_symlink()


def test_relink_tablespaces_refuses_a_link_without_a_copy(tmp_path):
    data = tmp_path / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "pg_tblspc" / "16384").symlink_to("/srv/live-ts")
    with pytest.raises(BackupError) as caught:
        rc.relink_tablespaces(str(data), {})
    assert "could not run" in caught.value.msg and "16384 (/srv/live-ts)" in caught.value.msg
    assert caught.value.facts == {"check_ran": False}


def test_links_out_of(tmp_path):
    work = tmp_path / "work"
    (work / "data" / "sub").mkdir(parents=True)
    (work / "ts").mkdir()
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (work / "data" / "in").symlink_to(work / "ts")
    (work / "data" / "sub" / "relative_in").symlink_to(os.path.join("..", "..", "ts"))
    (work / "data" / "out").symlink_to(outside)
    (work / "data" / "sub" / "relative_out").symlink_to(os.path.join("..", "..", "..", "outside", "deep"))
    assert rc.links_out_of(str(work / "data"), str(work)) == ["data/out", "data/sub/relative_out"]


def make_copy(tmp_path, live_wal):
    """A plain copy laid out in work/: the live layout's links still in it."""
    work = tmp_path / "work"
    data = work / "data"
    (data / "pg_tblspc").mkdir(parents=True)
    (data / "pg_wal").symlink_to(live_wal)
    (data / "pg_tblspc" / "16384").symlink_to(tmp_path / "live-ts")
    (work / "ts" / "16384").mkdir(parents=True)
    (data / "tablespace_map").write_text("16384 %s\n" % (tmp_path / "live-ts"))
    live_conf = tmp_path / "etc-postgresql.conf"
    live_conf.write_text("include 'live.conf'\n")
    (data / "postgresql.conf").symlink_to(live_conf)
    (data / "postgresql.auto.conf").write_text("archive_command = 'cp %p /srv/archive/%f'\n")
    return work, data, {"16384": str(work / "ts" / "16384")}


def test_isolate_leaves_no_way_out_of_the_scratch_directory(tmp_path, live_wal):
    work, data, tblspcs = make_copy(tmp_path, live_wal)
    rc.isolate(str(work), str(data), tblspcs)
    for name in EMPTY_DIRS:
        assert (data / name).is_dir() and not (data / name).is_symlink(), name
    assert os.listdir(str(live_wal)) == ["000000010000000000000003"]
    assert os.readlink(str(data / "pg_tblspc" / "16384")) == tblspcs["16384"]
    assert (data / "tablespace_map").read_text() == "16384 %s\n" % tblspcs["16384"]
    assert rc.links_out_of(str(data), str(work)) == []
    # The server will read only the configuration written for it.
    assert not os.path.lexists(str(data / "postgresql.conf")) and not (data / "postgresql.auto.conf").exists()
    assert (work / "live-config" / "postgresql.auto.conf").read_text().startswith("archive_command")
    assert (tmp_path / "etc-postgresql.conf").read_text() == "include 'live.conf'\n"


def test_isolate_refuses_a_tablespace_map_entry_without_a_copy(tmp_path, live_wal):
    work, data, _tblspcs = make_copy(tmp_path, live_wal)
    (data / "pg_tblspc" / "16384").unlink()
    with pytest.raises(BackupError) as caught:
        rc.isolate(str(work), str(data), {})
    assert "no copy of tablespace 16384" in caught.value.msg and caught.value.facts == {"check_ran": False}


def test_isolate_refuses_any_other_link_out(tmp_path, live_wal):
    work, data, tblspcs = make_copy(tmp_path, live_wal)
    (data / "log").symlink_to(tmp_path)
    with pytest.raises(BackupError) as caught:
        rc.isolate(str(work), str(data), tblspcs)
    assert "could not run" in caught.value.msg and "data/log" in caught.value.msg
    assert caught.value.facts == {"check_ran": False}


def test_materialize_extracts_the_backups_wal_beside_the_live_wal(tmp_path, live_wal):
    """base.tar of an older backup holds pg_wal as a link to the live WAL; pg_wal.tar must not go through it."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "PG_VERSION").write_text("15\n")
    (source / "pg_wal").symlink_to(live_wal)
    segment = tmp_path / "000000010000000000000003"
    segment.write_text("archived segment")
    backup = tmp_path / "backup"
    backup.mkdir()
    with tarfile.open(str(backup / "base.tar"), "w") as tar:
        tar.add(str(source), arcname=".")
    with tarfile.open(str(backup / "pg_wal.tar"), "w") as tar:
        tar.add(str(segment), arcname=segment.name)
    work = tmp_path / "work"
    work.mkdir()
    data, tblspcs = rc.materialize(str(backup), str(work))
    assert tblspcs == {}
    assert (live_wal / "000000010000000000000003").read_text() == "live segment"
    pg_wal = work / "data" / "pg_wal"
    assert not pg_wal.is_symlink() and (pg_wal / segment.name).read_text() == "archived segment"


def test_missing_pg_ctl_means_the_check_could_not_run(tmp_path):
    with pytest.raises(BackupError) as caught:
        rc.verify_restore(str(tmp_path / "backup"), str(tmp_path), bindir=str(tmp_path / "bin"))
    assert caught.value.facts == {"check_ran": False}
    assert str(caught.value).startswith("The restore check could not run: there is no pg_ctl in ")
    assert "says nothing about the backup itself" in str(caught.value)
