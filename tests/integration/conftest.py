# pytest finds fixtures and hooks by their names in a conftest module.
import shutil
from pathlib import Path

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop_records import DEFAULT_STATE_DIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import system_identifier
from testbed.fixtures import (  # noqa: F401  pylint: disable=unused-import
    another_cluster, clusters, db, ext_pg, login, pg, pytest_configure, pytest_unconfigure, restore, scratch,
    testbed_dir)
from fleet.fixtures import fleet, fleet_hosts  # noqa: F401  pylint: disable=unused-import
from watchdogs import end_watchdogs


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
