# pytest finds fixtures and hooks by their names in a conftest module.
import shutil
from pathlib import Path

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import DEFAULT_STATE_DIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import system_identifier
from runner import start_role
from testbed.fixtures import (  # noqa: F401  pylint: disable=unused-import
    SELECTED, another_cluster, clusters, db, ext_pg, handed_out, login, pg, prefer, pytest_configure, pytest_unconfigure,
    restore, scratch, testbed_dir)
from fleet.fixtures import fleet, fleet_hosts  # noqa: F401  pylint: disable=unused-import
from watchdogs import end_watchdogs


# Cases that do not depend on the major run on fewer, never skipped: prefer() falls back to a selected major.
@pytest.fixture(params=prefer((14, 15)), ids=lambda m: f"pg{m}")
def api_pg(request, clusters):
    """14 (native API) and 15 (the first major with the extension): both APIs, e.g. both safety stops."""
    yield from handed_out(clusters(request.param))


@pytest.fixture(params=prefer((15,)), ids=lambda m: f"pg{m}")
def one_pg(request, clusters):
    """15 alone, for the collection's own handling, which is the same on every major."""
    yield from handed_out(clusters(request.param))


@pytest.fixture(params=prefer((15,), [m for m in SELECTED if m >= 15]), ids=lambda m: f"pg{m}")
def one_ext_pg(request, clusters):
    """15, or the first extension major selected: for what only the extension path has."""
    yield from handed_out(clusters(request.param))


@pytest.fixture
def state_dir(scratch):
    """State records (and so their watchdogs) in the test's scratch; the watchdogs are ended by PID after it."""
    path = scratch / "state"
    yield path
    end_watchdogs(path)


@pytest.fixture
def runs(scratch, state_dir):
    """runs(cluster, name, **role_vars): the role in a background ansible-playbook (runner.start_role), with
    the backups and state records in the test's scratch. After the test, what is left of each run is ended
    by id (and, through ``state_dir``, the watchdogs)."""
    started = []

    def start(cluster, name="run", **role_vars):
        role_vars.setdefault("exclusive_backup_dest", str(scratch / "backups"))
        role_vars.setdefault("exclusive_backup_state_dir", str(state_dir))
        role_vars.setdefault("exclusive_backup_verify_archiving", "passive")
        started.append(start_role(cluster, scratch, name, **role_vars))
        return started[-1]

    start.state_dir = state_dir
    yield start
    for run in started:
        run.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _forget_state_records(testbed_dir):
    """Tests that leave state_dir at its default (the role's tests) write records and leave watchdogs
    there: end this session's watchdogs by PID and remove its records."""
    yield
    for pg_control in Path(testbed_dir).glob("**/data/global/pg_control"):
        cluster = system_identifier(str(pg_control.parent.parent))
        if cluster:
            end_watchdogs(Path(DEFAULT_STATE_DIR) / cluster)
            shutil.rmtree(Path(DEFAULT_STATE_DIR) / cluster, ignore_errors=True)
