"""Fixtures of the fleet_ssh verifier: every check runs on the fleet's hosts over SSH (testinfra's ansible backend).

What converge left is read from PGX_FLEET_RESULTS on the controller: one
exclusive_backup_result per database host, which names the run's label.
"""

import json
import os

import pytest

RESULTS = os.environ.get("PGX_FLEET_RESULTS", "")

# psycopg2 on the host's Python (the one the modules ran with), as the server's OS user:
# a check that does not go through the collection's own modules.
QUERY = ("import sys, psycopg2\n"
         "conn = psycopg2.connect(host=sys.argv[1], port=sys.argv[2], dbname=sys.argv[3])\n"
         "cur = conn.cursor()\n"
         "cur.execute(sys.argv[4])\n"
         "print(cur.fetchone()[0])\n")


@pytest.fixture
def variables(host):
    """The host's inventory variables, as the fleet's inventory gives them."""
    return host.ansible.get_variables()


@pytest.fixture
def results():
    """exclusive_backup_result by database host."""
    found = {}
    for name in sorted(os.listdir(RESULTS)):
        with open(os.path.join(RESULTS, name), encoding="utf-8") as handle:
            found[name[:-len(".json")]] = json.load(handle)
    return found


@pytest.fixture
def result(variables, results):
    """This database host's exclusive_backup_result."""
    return results[variables["inventory_hostname"]]


@pytest.fixture
def info(host):
    """pgexclusive.backup.pg_backup_info on the host (read-only, check mode), with its state records."""
    args = " ".join(f"{option}={{{{ exclusive_backup_{option} }}}}"
                    for option in ("login_unix_socket", "login_port", "login_db", "state_dir"))
    return host.ansible("pgexclusive.backup.pg_backup_info", args)


@pytest.fixture
def sql(host, variables):
    """sql(query): the first value of ``query`` in the backup database, as the postgres OS user on the host."""
    def run(query):
        with host.sudo("postgres"):
            return host.check_output(
                "%s -c %s %s %s %s %s", variables["ansible_python_interpreter"], QUERY,
                variables["exclusive_backup_login_unix_socket"], str(variables["exclusive_backup_login_port"]),
                variables["exclusive_backup_login_db"], query)
    return run
