"""pytest fixtures of the fleet test bed; tests/integration/conftest.py imports them by name.

``fleet`` is one fleet per session (three database hosts, PostgreSQL 14, 15
and 18, and a repository host), built on first use and removed at the end of
the session, also on Ctrl-C or SIGTERM (the test bed's pytest_configure turns
SIGTERM into KeyboardInterrupt, which runs the teardown). A session killed
outright leaves it behind until the next fleet starts: netns.py removes
fleets whose owner is gone.
"""

import pytest

from .fleet import Fleet


@pytest.fixture(scope="session")
def fleet(testbed_dir):
    built = Fleet.create(testbed_dir / "fleet")
    yield built
    built.destroy()


@pytest.fixture
def fleet_hosts(fleet):
    """The database hosts, each handed out running, out of backup mode, with working archiving."""
    yield fleet.db_hosts
    for fleet_host in fleet.db_hosts:
        cluster = fleet_host.cluster
        if cluster.pid is None:
            cluster.start()
        cluster.end_backup_if_any()
        if cluster.archiving_broken:
            cluster.repair_archiving()
