import json
import os
import struct

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import check_targets as targets
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError


def record(sysid, status="complete", finished="2026-11-21T10:00:00Z"):
    return {"status": status, "system_identifier": sysid, "finished_at": finished}


def test_latest_complete_of_one_cluster():
    records = {"a": record("1", finished="2026-11-21T10:00:00Z"), "b": record("1", finished="2026-11-22T10:00:00Z"),
               "c": record("1", "failed", "2026-11-23T10:00:00Z"), "d": record("2", finished="2026-11-24T10:00:00Z"),
               "e": None}
    assert restore.latest_complete(records, "1") == "b"
    assert restore.latest_complete(records, "2") == "d"
    with pytest.raises(BackupError, match="complete backups of 2 clusters"):
        restore.latest_complete(records)
    with pytest.raises(BackupError, match="no complete backup of the cluster with system identifier 3"):
        restore.latest_complete(records, "3")


def write(backup_dir, content):
    os.makedirs(str(backup_dir))
    (backup_dir / "backup.json").write_text(json.dumps(content))


def test_choose_backup_refuses_an_incomplete_one_unless_allowed(tmp_path):
    write(tmp_path / "dest" / "old", dict(record("7"), label="old"))
    write(tmp_path / "dest" / "broken", dict(record("7", "failed", "2026-12-01T00:00:00Z"), error="copy failed"))
    path, rec = restore.choose_backup(dest=str(tmp_path / "dest"))
    assert path.endswith("/old") and rec["label"] == "old"
    with pytest.raises(BackupError, match=r"is not complete \(status failed: copy failed\)"):
        restore.choose_backup(str(tmp_path / "dest" / "broken"))
    assert restore.choose_backup(str(tmp_path / "dest" / "broken"), allow_incomplete=True)[1]["status"] == "failed"
    with pytest.raises(BackupError, match="is of the cluster 7, not 8"):
        restore.choose_backup(str(tmp_path / "dest" / "old"), system_identifier="8")
    with pytest.raises(BackupError, match="either backup_dir or dest"):
        restore.choose_backup()
    with pytest.raises(BackupError, match="holds no readable backup.json"):
        restore.choose_backup(str(tmp_path))


def test_check_target_dir_decides_and_set_aside_renames(tmp_path):
    assert restore.check_target_dir(str(tmp_path / "new"), False) is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore.check_target_dir(str(empty), False) is False
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").write_text("x")
    with pytest.raises(BackupError, match="is not empty"):
        restore.check_target_dir(str(full), False)
    assert restore.check_target_dir(str(full), True) is True
    assert (full / "f").read_text() == "x", "checking changes nothing"
    assert targets.set_aside(str(full), "T") == str(tmp_path / "full.pgx-aside-T")
    assert (tmp_path / "full.pgx-aside-T" / "f").read_text() == "x" and not full.exists()


def test_check_target_dir_refuses_a_running_postmaster_even_with_force(tmp_path):
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n" % (os.getpid(), tmp_path))
    with pytest.raises(BackupError, match="A postmaster \\(PID %d\\) runs" % os.getpid()):
        restore.check_target_dir(str(tmp_path), True)
    assert (tmp_path / "postmaster.pid").exists()


def test_tablespace_targets_by_oid_or_old_path_else_beside_the_data_directory_never_the_backups_path():
    text = "16384 /live/a\n16385 /live/b\n16386 /live/c\n"
    assert restore.tablespace_targets(text, ["16384", "16385", "16386", "16387"], {16384: "/new/a", "/live/b": "/new/b"},
                                      "/srv/restored.tablespaces") == {
        "16384": "/new/a", "16385": "/new/b", "16386": "/srv/restored.tablespaces/16386",
        "16387": "/srv/restored.tablespaces/16387"}
    assert targets.default_tablespaces_dir("/srv/restored/") == "/srv/restored.tablespaces"


def test_needs_label_fix_only_on_15_and_later():
    label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nBACKUP METHOD: pg_start_backup\n"
    assert restore.needs_label_fix(label, 15) and restore.needs_label_fix(label, 18)
    assert not restore.needs_label_fix(label, 14)
    assert not restore.needs_label_fix(label.replace("pg_start_backup", "streamed"), 16)


def test_wal_needed_and_missing(tmp_path):
    rec = {"start_wal_file": "000000010000000000000002", "start_lsn": "0/2000028",
           "stop_wal_file": "000000010000000000000004"}
    needed = restore.wal_needed(rec)
    assert needed == ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / needed[0]).write_text("")
    (tmp_path / "b" / needed[2]).write_text("")
    assert restore.missing_wal(needed, [str(tmp_path / "a"), None, str(tmp_path / "b")]) == needed[1]
    assert restore.wal_needed({}) == []


def test_wal_in_the_backup_is_found_before_anything_is_laid_out(tmp_path):
    (tmp_path / "data" / "pg_wal").mkdir(parents=True)
    (tmp_path / "data" / "pg_wal" / "000000010000000000000003").write_text("")
    rec = {"wal_included": ["000000010000000000000002"]}
    assert restore.wal_in_backup(str(tmp_path), rec) == {"000000010000000000000002", "000000010000000000000003"}
    assert restore.wal_in_backup(str(tmp_path / "tar-backup"), {}) == set()
    needed = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    assert restore.missing_wal(needed, [None], restore.wal_in_backup(str(tmp_path), rec)) == needed[2]


RECORD = {"label": "nightly", "status": "complete", "system_identifier": "7", "start_lsn": "0/2000028",
          "start_wal_file": "000000010000000000000002", "stop_lsn": "0/3000100",
          "stop_wal_file": "000000010000000000000003"}


def test_check_wal_at_hand(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "000000010000000000000002").write_text("")
    with pytest.raises(BackupError, match="The WAL segment 000000010000000000000003, which the backup needs") as exc:
        restore.check_wal_at_hand({"wal_archive_dir": str(archive)}, str(tmp_path / "b"), RECORD)
    assert exc.value.facts == {"missing_wal": "000000010000000000000003"}
    assert "Nothing was restored." in exc.value.msg
    (archive / "000000010000000000000003").write_text("")
    restore.check_wal_at_hand({"wal_archive_dir": str(archive)}, str(tmp_path / "b"), RECORD)
    # A custom restore_command fetches from where only it knows.
    restore.check_wal_at_hand({"restore_command": "fetch %f %p"}, str(tmp_path / "b"), RECORD)


def test_a_restore_without_its_wal_changes_nothing_not_even_with_force(tmp_path):
    import pwd
    backup = tmp_path / "backups" / "nightly"
    write(backup, RECORD)
    (backup / "data").mkdir()
    (backup / "data" / "backup_label").write_text("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n")
    (backup / "data" / "global").mkdir()
    (backup / "data" / "global" / "pg_control").write_bytes(struct.pack("<Q", 7) + b"\0" * 24)
    (tmp_path / "archive").mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "old file").write_text("keep")
    params = dict(backup_dir=str(backup), data_directory=str(target), force=True, verify=False, start=False,
                  owner=pwd.getpwuid(os.geteuid()).pw_name, wal_archive_dir=str(tmp_path / "archive"))
    with pytest.raises(BackupError, match="The WAL segment 000000010000000000000002") as exc:
        restore.restore_task(params, False)
    assert sorted(os.listdir(str(tmp_path))) == ["archive", "backups", "target"], "nothing set aside"
    assert os.listdir(str(target)) == ["old file"]
    assert exc.value.facts["data_directory"] == str(target) and "set_aside" not in exc.value.facts
    with pytest.raises(BackupError, match="The WAL segment 000000010000000000000002"):
        restore.restore_task(params, True)


def test_login_role_is_the_owner_unless_login_user_is_given():
    assert restore.login_role({"login_user": None}, "postgres") == "postgres"
    assert restore.login_role({}, "pgdata") == "pgdata"
    assert restore.login_role({"login_user": "restorer"}, "postgres") == "restorer"


def test_the_restored_server_is_asked_as_its_owner_with_the_owners_uid(tmp_path):
    """Peer authentication admits a root-run restore only when it connects with the owner's uid, as the owner's
    role."""
    import pwd
    try:
        owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    except KeyError:
        pytest.skip("no postgres OS user to act as")
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n0\n5499\n/run/sock\n" % (os.getpid(), tmp_path))
    seen = []

    def connect(sock, port, user):
        seen.append((sock, port, user, os.geteuid(), os.getegid()))
        raise OSError("FATAL:  the database system is not yet accepting connections")

    gid = owner.pw_gid if os.geteuid() == 0 else os.getegid()
    engine = restore.Restore({}, connect)
    assert engine._state(str(tmp_path), owner) is None
    engine.p = {"login_user": "restorer"}
    engine._state(str(tmp_path), owner)
    assert seen == [("/run/sock", 5499, owner.pw_name, owner.pw_uid, gid),
                    ("/run/sock", 5499, "restorer", owner.pw_uid, gid)]
    assert (os.geteuid(), os.getegid()) == (os.getuid(), os.getgid()), "root is taken back"


@pytest.mark.parametrize("message,refused", [
    ('connection to server on socket "/s/.s.PGSQL.5499" failed: FATAL:  the database system is starting up', False),
    ('connection to server on socket "/s/.s.PGSQL.5499" failed: FATAL:  the database system is not yet accepting '
     'connections\nDETAIL:  Consistent recovery state has not been yet reached.', False),
    ('connection to server on socket "/s/.s.PGSQL.5499" failed: No such file or directory', False),
    ('connection to server on socket "/s/.s.PGSQL.5499" failed: FATAL:  Peer authentication failed for user "x"', True),
    ('connection to server on socket "/s/.s.PGSQL.5499" failed: FATAL:  role "restorer" does not exist', True),
    ('FATAL:  no pg_hba.conf entry for host "[local]", user "x", database "postgres", no encryption', True),
    ('connection to server on socket "/s/.s.PGSQL.5499" failed: Permission denied', True),
])
def test_a_refused_login_is_told_from_a_server_still_starting(message, refused):
    assert restore.refused_login(message) is refused


def test_a_refused_login_fails_at_once_naming_the_role_instead_of_waiting_for_the_timeout(tmp_path):
    import pwd
    owner = pwd.getpwuid(os.geteuid())
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n0\n5499\n/run/sock\n" % (os.getpid(), tmp_path))

    def connect(sock, port, user):
        raise OSError('FATAL:  role "%s" does not exist' % user)

    engine = restore.Restore({"login_user": "restorer"}, connect)
    with pytest.raises(BackupError, match='refused the restore.s connection as role restorer .*role "restorer" does not exist') as raised:
        engine._state(str(tmp_path), owner)
    assert raised.value.facts["login_refused"] and "restore_login_user" in raised.value.hint


def test_a_socket_the_os_refuses_the_owner_is_reached_with_the_modules_own_uid(tmp_path):
    import pwd
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    owner = pwd.getpwnam("postgres")
    seen = []

    def connect(sock, port, user):
        seen.append(os.geteuid())
        if os.geteuid() != 0:
            raise OSError('connection to server on socket "%s/.s.PGSQL.%d" failed: Permission denied' % (sock, port))
        return "connection"

    engine = restore.Restore({}, connect)
    assert engine._connect("/run/sock", 5499, "postgres", owner) == "connection"
    assert engine._connect("/run/sock", 5499, "postgres", owner) == "connection"
    assert seen == [owner.pw_uid, 0, 0], "the owner's uid is tried once, then the module's own"
    assert restore.socket_refused('failed: FATAL:  permission denied for database "x"') is False
