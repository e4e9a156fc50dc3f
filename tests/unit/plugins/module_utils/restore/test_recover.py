import os
import pwd

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils import restore
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore import recover

SOCKET = 'connection to server on socket "/s/.s.PGSQL.5499" failed: '


@pytest.mark.parametrize("message,outcome", [
    (SOCKET + "FATAL:  the database system is starting up", "wait"),
    (SOCKET + "FATAL:  the database system is not yet accepting connections\nDETAIL:  Consistent recovery state "
              "has not been yet reached.", "wait"),
    (SOCKET + "FATAL:  the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.",
     "wait"),
    (SOCKET + "FATAL:  the database system is shutting down", "wait"),
    (SOCKET + "No such file or directory\n\tIs the server running locally and accepting connections on that socket?",
     "wait"),
    ('connection to server at "127.0.0.1", port 5499 failed: Connection refused', "wait"),
    ("server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally", "wait"),
    ("FATAL:  terminating connection due to administrator command", "wait"),
    (SOCKET + "FATAL:  sorry, too many clients already", "wait"),
    (SOCKET + "FATAL:  Peer authentication failed for user \"x\"", "refused"),
    (SOCKET + "FATAL:  role \"restorer\" does not exist", "refused"),
    (SOCKET + "Permission denied", "refused"),
    ("ERROR:  function pg_get_wal_replay_pause_state() does not exist", "refused"),
    ("ERROR:  canceling statement due to statement timeout", "error"),
    (SOCKET + "FATAL:  could not open file \"global/pg_filenode.map\": Permission denied", "refused"),
    (SOCKET + "FATAL:  out of memory", "error"),
    ("ERROR:  syntax error at or near \"SELEC\"", "error"),
    ("", "error"),
])
def test_only_a_server_still_starting_is_waited_out(message, outcome):
    assert recover.connection_outcome(message) == outcome


def owner_and_pid(tmp_path):
    (tmp_path / "postmaster.pid").write_text("%d\n%s\n0\n5499\n/run/sock\n" % (os.getpid(), tmp_path))
    return pwd.getpwuid(os.geteuid())


def test_a_real_error_fails_at_once_instead_of_waiting_for_the_timeout(tmp_path):
    owner = owner_and_pid(tmp_path)

    def connect(sock, port, user):
        raise OSError("FATAL:  out of memory")

    engine = restore.Restore({"login_user": "restorer"}, connect)
    with pytest.raises(BackupError) as raised:
        engine._state(str(tmp_path), owner)
    assert raised.value.msg == "The restore could not ask the restored server where its recovery is: FATAL:  out of memory"
    assert raised.value.facts["server_error"] == "FATAL:  out of memory"


class FailingCursor:
    def __init__(self, message):
        self.message = message

    def execute(self, _sql):
        raise OSError(self.message)


class Connection:
    def __init__(self, message):
        self.message, self.closed = message, False

    def cursor(self):
        return FailingCursor(self.message)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("message,waited", [
    ("server closed the connection unexpectedly", True),
    ("ERROR:  permission denied for function pg_control_checkpoint", False),
])
def test_a_query_error_fails_at_once_unless_the_server_went_down_under_it(tmp_path, message, waited):
    owner = owner_and_pid(tmp_path)
    conn = Connection(message)
    engine = restore.Restore({}, lambda sock, port, user: conn)
    if waited:
        assert engine._state(str(tmp_path), owner) is None
    else:
        with pytest.raises(BackupError, match="could not ask the restored server"):
            engine._state(str(tmp_path), owner)
    assert conn.closed


def test_a_bug_is_not_taken_for_a_server_still_starting(tmp_path):
    owner = owner_and_pid(tmp_path)

    def connect(sock, port, user):
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        restore.Restore({}, connect)._state(str(tmp_path), owner)


def test_login_role_is_the_owner_unless_login_user_is_given():
    assert restore.login_role({"login_user": None}, "postgres") == "postgres"
    assert restore.login_role({}, "pgdata") == "pgdata"
    assert restore.login_role({"login_user": "restorer"}, "postgres") == "restorer"


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
