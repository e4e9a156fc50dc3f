import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.connection import (
    connection_failure, describe_target, libpq_params, with_queries)
from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

BASE = dict(login_user="postgres", login_password="", login_host="", login_unix_socket="", login_port=5432,
            login_db="backupctl", ssl_mode="prefer", ca_cert=None, ssl_cert=None, ssl_key=None,
            connect_params={}, connect_timeout=10)


def params(**changes):
    return dict(BASE, **changes)


def test_default_socket_has_no_host_and_no_password():
    kwargs = libpq_params(params())
    assert "host" not in kwargs and "password" not in kwargs
    assert kwargs["dbname"] == "backupctl" and kwargs["port"] == 5432 and kwargs["sslmode"] == "prefer"


def test_unix_socket_is_the_host_unless_a_host_is_given():
    assert libpq_params(params(login_unix_socket="/run/pg"))["host"] == "/run/pg"
    assert libpq_params(params(login_unix_socket="/run/pg", login_host="db1"))["host"] == "db1"


def test_ssl_files_and_connect_params():
    kwargs = libpq_params(params(ca_cert="/ca", ssl_cert="/c", ssl_key="/k", login_password="pw",
                                 connect_params={"target_session_attrs": "read-write", "sslmode": "require"}))
    assert (kwargs["sslrootcert"], kwargs["sslcert"], kwargs["sslkey"]) == ("/ca", "/c", "/k")
    assert kwargs["password"] == "pw"
    assert kwargs["target_session_attrs"] == "read-write" and kwargs["sslmode"] == "require"


def test_describe_target():
    assert describe_target(params(login_host="db1")) == "user postgres on database backupctl at db1:5432"


def test_unknown_database():
    error = connection_failure('FATAL:  database "backupctl" does not exist', params())
    assert "Set login_db" in str(error)


def test_authentication_failure_never_shows_the_password():
    error = connection_failure('FATAL:  password authentication failed for user "bob" (tried hunter2)',
                               params(login_password="hunter2"))
    assert "hunter2" not in str(error) and "hunter2" not in str(error.fail_kwargs())
    assert "login_password" in str(error)


def test_refused():
    error = connection_failure("could not connect to server: Connection refused", params(login_host="db1"))
    assert "running and listening" in str(error) and error.facts["connection_error"]


class SentTwo(object):
    """What with_queries reads of a session: the statements sent, and close()."""

    def __init__(self):
        self.queries = ["SELECT 1", "SELECT 2"]
        self.closed = False

    def close(self):
        self.closed = True


def test_with_queries_attaches_the_statements_and_closes():
    session = SentTwo()
    assert with_queries(session, lambda: {"changed": False}) == {"changed": False, "queries": ["SELECT 1", "SELECT 2"]}
    assert session.closed


def test_with_queries_attaches_the_statements_to_a_failure_too():
    session = SentTwo()

    def fail():
        raise BackupError("broke", "hint")
    with pytest.raises(BackupError) as caught:
        with_queries(session, fail)
    assert caught.value.facts["queries"] == ["SELECT 1", "SELECT 2"] and session.closed
