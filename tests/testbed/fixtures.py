"""pytest fixtures of the real-server test bed (a conftest star-imports them).

``pg`` runs a test once per PostgreSQL major (PGX_MAJORS, default all four),
``ext_pg`` once per major that needs the extension. Each major's cluster is
started once per session and handed to every test out of backup mode and with
working archiving; ``db`` is a fresh database dropped after the test.

The clusters have the production layout: ``pg_wal`` is a link to
``<root>/wal`` (``initdb --waldir``; ``Cluster.wal_dir``), unless
PGX_WAL_INSIDE=1. ``another_cluster(major)`` gives a test a second cluster
of its own, ``login(cluster, monitor=True)`` a least-privilege login with
README.md's grants; both are removed after the test.
"""

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest

from . import MAJORS, Cluster, provide, stop_all


def _selected_majors():
    raw = os.environ.get("PGX_MAJORS", "")
    return [int(m) for m in raw.split(",") if m.strip()] or list(MAJORS)


SELECTED = _selected_majors()


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # pytest tears fixtures down on KeyboardInterrupt but not on SIGTERM.
    signal.signal(signal.SIGTERM, _sigterm)


def pytest_unconfigure(config):
    stop_all()


@pytest.fixture(scope="session")
def testbed_dir():
    root = Path(tempfile.mkdtemp(prefix="pgx-testbed-"))
    yield root
    stop_all()
    if not os.environ.get("PGX_KEEP"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def clusters(testbed_dir):
    """One cluster per major, created on first use."""
    started = {}

    def get(major):
        if major not in started:
            started[major] = Cluster.create(provide(major), testbed_dir / f"pg{major}")
        return started[major]

    yield get
    for cluster in started.values():
        cluster.stop()


def prefer(wanted, among=None):
    """The majors of ``wanted`` that are selected (of ``among``), else the first selected one.

    For cases that do not depend on the major: a reduction, never a skipped case.
    """
    among = SELECTED if among is None else among
    return [m for m in among if m in wanted] or list(among[:1])


def handed_out(cluster):
    """A session cluster as a test gets it, and as the next test gets it back."""
    if cluster.pid is None:
        cluster.start()
    yield cluster
    if cluster.pid is None:
        cluster.start()
    # Archiving first: the extension's stop waits for the archive, without end while it fails.
    if cluster.archiving_broken:
        cluster.repair_archiving()
    cluster.end_backup_if_any()


@pytest.fixture(params=SELECTED, ids=lambda m: f"pg{m}")
def pg(request, clusters):
    yield from handed_out(clusters(request.param))


@pytest.fixture(params=[m for m in SELECTED if m >= 15], ids=lambda m: f"pg{m}")
def ext_pg(request, clusters):
    yield from handed_out(clusters(request.param))


@pytest.fixture
def db(request):
    """A fresh database in the test's cluster (``pg`` or ``ext_pg``)."""
    cluster = request.getfixturevalue("ext_pg" if "ext_pg" in request.fixturenames else "pg")
    name = cluster.create_database()
    yield name
    cluster.drop_database(name)


@pytest.fixture
def scratch(testbed_dir):
    """A directory for one test's copies, readable by the postgres OS user."""
    path = Path(tempfile.mkdtemp(prefix="t-", dir=testbed_dir))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def restore(scratch):
    """restore(source, copy_dir): start a server on a copy, replaying from source's archive.

    The restored servers are stopped and removed after the test.
    """
    restored = []

    def run(source, copy_dir, target="immediate"):
        root = scratch / f"restored-{len(restored)}"
        restored.append(Cluster.restore(source.inst, copy_dir, root, source.archive_dir, target))
        return restored[-1]

    yield run
    for cluster in restored:
        cluster.destroy()


@pytest.fixture
def another_cluster(scratch):
    """another_cluster(major): a new cluster of that major under the test's scratch directory
    (same layout as the session's: pg_wal outside the data directory), stopped and removed after the test."""
    made = []

    def create(major, **kwargs):
        made.append(Cluster.create(provide(major), scratch / f"cluster-{len(made)}-pg{major}", **kwargs))
        return made[-1]

    yield create
    for cluster in made:
        cluster.destroy()


@pytest.fixture
def login():
    """login(cluster, monitor=True): a least-privilege login role with exactly README.md's grants
    (without pg_monitor when ``monitor`` is false); dropped after the test. Returns the role's name."""
    made = []

    def create(cluster, monitor=True):
        name = "pgx_backup_" + uuid.uuid4().hex[:8]
        made.append((cluster, name))
        return cluster.create_login(name, monitor=monitor)

    yield create
    for cluster, name in made:
        if cluster.pid is None:
            cluster.start()
        cluster.drop_login(name)
