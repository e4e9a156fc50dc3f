"""Bad inputs on PostgreSQL 15 (the extension path; the checks are the collection's, the same on every major).

Each case must fail with a message that says what is wrong and what to do,
and change nothing on the server: no backup in progress, no state record,
no backup directory. Module-level cases share one ansible-playbook run.
"""

import json
import re
import uuid

import pytest

from runner import connection, run_role, run_tasks, task
from testbed.cluster import free_port


def assert_nothing_changed(pg, scratch):
    assert not pg.in_backup(), "a bad input must not leave a backup running"
    state = scratch / "state"
    assert not state.exists() or not list(state.glob("*/*.json")), "no state record for a refused run"


def messages(results):
    """name -> msg, for the table in docs/reliability.md (pytest -s prints them)."""
    for name, result in results.items():
        print("\nBADINPUT %s: %s" % (name, result.get("msg", "")[:600]))


@pytest.fixture
def password_user(one_ext_pg):
    """A role that must authenticate with a password over TCP (the test bed trusts everything else)."""
    pg = one_ext_pg
    name = "pw_" + uuid.uuid4().hex[:8]
    hba = pg.data_dir / "pg_hba.conf"
    original = hba.read_text()
    pg.sql(f"CREATE ROLE {name} LOGIN PASSWORD 'right-password'")
    hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + original)
    pg.reload()
    yield name
    hba.write_text(original)
    pg.reload()
    pg.sql(f"DROP ROLE {name}")


@pytest.fixture
def unprivileged_user(one_ext_pg):
    name = "nopriv_" + uuid.uuid4().hex[:8]
    one_ext_pg.sql(f"CREATE ROLE {name} LOGIN")
    yield name
    one_ext_pg.sql(f"DROP ROLE {name}")


def test_module_inputs(one_ext_pg, scratch, password_user, unprivileged_user):
    pg = one_ext_pg
    no_extension = pg.create_database()
    secret = "wrong-" + uuid.uuid4().hex
    state = dict(state_dir=str(scratch / "state"))
    conn = dict(connection(pg), **state)
    tcp = dict(state, login_host="127.0.0.1", login_port=pg.port, login_db=pg.backup_db)
    cases = {
        "label with a newline": task("pg_start_backup", label="two\nlines", max_duration=5, **conn),
        "label over 1024 bytes": task("pg_start_backup", label="x" * 1025, max_duration=5, **conn),
        "unknown login_db": task("pg_start_backup", label="l", **{**conn, "login_db": "no_such_db"}),
        "wrong password": task("pg_start_backup", label="l", login_user=password_user, login_password=secret, **tcp),
        "unreachable server": task("pg_start_backup", label="l", connect_timeout=3,
                                   **{**tcp, "login_port": free_port()}),
        "missing extension": task("pg_start_backup", label="l", **{**conn, "login_db": no_extension}),
        "user without EXECUTE": task("pg_start_backup", label="l", **{**conn, "login_user": unprivileged_user}),
        "negative max_duration": task("pg_start_backup", label="l", max_duration=-1, **conn),
        "unusable state_dir with a lease": task("pg_start_backup", label="l", max_duration=5,
                                                **{**conn, "state_dir": "/proc/pgx-state"}),
    }
    try:
        results = dict(zip(cases, run_tasks(list(cases.values()))))
    finally:
        pg.drop_database(no_extension)
    messages(results)
    for name, result in results.items():
        assert result.get("failed"), (name, result)
        assert "hint" in result or "Set " in result["msg"] or "Check " in result["msg"], (name, result["msg"])
    assert "line break" in results["label with a newline"]["msg"]
    assert "1025 bytes" in results["label over 1024 bytes"]["msg"]
    assert "no_such_db" in results["unknown login_db"]["msg"] and "login_db" in results["unknown login_db"]["hint"]
    wrong = results["wrong password"]
    assert "password authentication failed" in wrong["msg"]
    assert secret not in json.dumps(wrong) and secret not in wrong["_output"], "the password is never printed"
    assert "is the server running" in results["unreachable server"]["msg"].lower() or \
        "connection refused" in results["unreachable server"]["msg"].lower()
    assert "extension is not installed" in results["missing extension"]["msg"]
    assert "CREATE EXTENSION pg_exclusive_backup" in results["missing extension"]["msg"]
    assert "GRANT EXECUTE ON FUNCTION" in results["user without EXECUTE"]["msg"]
    assert "must be 0" in results["negative max_duration"]["msg"]
    assert "Nothing was started" in results["unusable state_dir with a lease"]["msg"]
    assert_nothing_changed(pg, scratch)


def test_quotes_and_semicolons_are_stored_literally(one_ext_pg, scratch):
    pg = one_ext_pg
    label = "it's; DROP TABLE x; --\"%s\"" % uuid.uuid4().hex[:6]
    conn = dict(connection(pg), state_dir=str(scratch / "state"))
    started, stopped = run_tasks([task("pg_start_backup", label=label, fast=True, **conn),
                                  task("pg_stop_backup", label=label, **conn)])
    assert started["changed"] and f"LABEL: {label}\n" in started["backup_label"]
    assert stopped["changed"] and stopped["label"] == label
    print("\nBADINPUT label with quotes and semicolons (module): stored literally: %r" % label)


def test_server_in_recovery(one_ext_pg, scratch):
    pg = one_ext_pg
    standby = pg.make_standby(scratch / "standby")
    try:
        start, = run_tasks([task("pg_start_backup", label="l", state_dir=str(scratch / "state"),
                                 **connection(standby))])
        assert start["failed"] and "in recovery" in start["msg"] and "primary" in start["msg"]
        assert not (standby.data_dir / "backup_label").exists()
        print("\nBADINPUT server in recovery: %s" % start["msg"])
    finally:
        standby.destroy()


ROLE_CASES = {
    "role: label with a newline": dict(exclusive_backup_label="two\nlines"),
    "role: label over 1024 bytes": dict(exclusive_backup_label="x" * 1025),
    "role: label with quotes and semicolons": dict(exclusive_backup_label="it's;x"),
    "role: unknown copy method": dict(exclusive_backup_method="scp"),
    "role: empty required variable": dict(exclusive_backup_dest=""),
    "role: dest inside the data directory": "DATA_DIR",
}


@pytest.mark.parametrize("case", list(ROLE_CASES))
def test_role_inputs(one_ext_pg, scratch, case):
    pg = one_ext_pg
    role_vars = ROLE_CASES[case]
    if role_vars == "DATA_DIR":
        role_vars = dict(exclusive_backup_dest=str(pg.data_dir / "backups"))
    role_vars = dict(dict(exclusive_backup_dest=str(scratch / "backups"), exclusive_backup_state_dir=str(scratch / "state"),
                          exclusive_backup_verify_archiving="passive", exclusive_backup_max_duration=30), **role_vars)
    run = run_role(pg, scratch, **role_vars)
    print("\nBADINPUT %s: %s" % (case, _error(run.output)))
    assert run.rc != 0, run.output[-3000:]
    assert_nothing_changed(pg, scratch)
    assert not (pg.data_dir / "backups").exists(), "nothing may be written into the data directory"
    assert not (scratch / "backups").exists() or not any((scratch / "backups").iterdir())


def test_role_dest_already_holding_this_label(one_ext_pg, scratch):
    pg = one_ext_pg
    label = "existing-" + uuid.uuid4().hex[:8]
    earlier = scratch / "backups" / label
    earlier.mkdir(parents=True)
    (earlier / "backup.json").write_text('{"status": "complete"}')
    run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"), exclusive_backup_label=label,
                   exclusive_backup_state_dir=str(scratch / "state"), exclusive_backup_verify_archiving="passive")
    print("\nBADINPUT role: dest already holding this label: %s" % _error(run.output))
    assert run.rc != 0 and "already holds a backup" in run.output
    assert (earlier / "backup.json").read_text() == '{"status": "complete"}'
    assert_nothing_changed(pg, scratch)


def test_role_archive_mode_off(one_ext_pg, scratch):
    pg = one_ext_pg
    pg.configure(archive_mode="off")
    pg.restart()
    try:
        run = run_role(pg, scratch, exclusive_backup_dest=str(scratch / "backups"),
                       exclusive_backup_state_dir=str(scratch / "state"))
    finally:
        pg.configure()
        pg.restart()
    print("\nBADINPUT role: archive_mode off: %s" % _error(run.output))
    assert run.rc != 0 and "archive_mode is off" in run.output, run.output[-3000:]
    assert_nothing_changed(pg, scratch)


def _error(output):
    found = re.findall(r'"msg": "((?:[^"\\]|\\.)*)"', output)
    if found:
        return found[-1][:600]
    errors = [line for line in output.splitlines() if "ERROR" in line or "FAILED" in line]
    return (errors[-1] if errors else output.strip().splitlines()[-1])[:600]
