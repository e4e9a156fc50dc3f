import os
import struct

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.restore.backup_on_disk import write, RECORD


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
