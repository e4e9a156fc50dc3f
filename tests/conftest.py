"""Make the collection importable as ansible_collections.pgexclusive.backup.

Ansible finds collections only inside an ``ansible_collections`` tree, so the
tests link this checkout into tests/output (kept out of git) and put that on
sys.path and on ANSIBLE_COLLECTIONS_PATH for the playbooks they run.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "tests" / "output" / "collections"


def _link_collection():
    if REPO.parent.parent.name == "ansible_collections":
        # Already in a collection tree (ansible-test, an installed copy).
        return str(REPO.parent.parent.parent)
    link = COLLECTIONS / "ansible_collections" / "pgexclusive" / "backup"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        try:
            link.symlink_to(REPO)
        except FileExistsError:
            # Another pytest worker made it a moment ago.
            pass
    return str(COLLECTIONS)


COLLECTIONS_PATH = _link_collection()
sys.path.insert(0, COLLECTIONS_PATH)
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS_PATH)

# Tests never write into the real home directory: Ansible's temporary files and
# collections, ansible-test's cache and Molecule's state go under a HOME of the
# test session's own, which every tool started by the tests inherits.
import atexit  # noqa: E402
import tempfile  # noqa: E402

if not os.environ.get("PGX_TEST_HOME"):
    _HOME = tempfile.mkdtemp(prefix="pgx-test-home-")
    os.chmod(_HOME, 0o755)
    # ANSIBLE_REMOTE_TEMP too: Ansible expands the default ~/.ansible/tmp as ~<remote user>, the
    # real home, not $HOME, for the local connection as for any other.
    os.environ.update(PGX_TEST_HOME=_HOME, HOME=_HOME, ANSIBLE_HOME=os.path.join(_HOME, ".ansible"),
                      ANSIBLE_REMOTE_TEMP=os.path.join(_HOME, ".ansible", "tmp"))
    atexit.register(shutil.rmtree, _HOME, True)


# With pytest-xdist (make test runs two workers, each with its own servers), tests
# that share files outside their own temporary directories run on one worker:
# the ecosystem checks share tests/output/ecosystem, and Molecule its cache.
SERIAL_GROUPS = {"ecosystem": "ecosystem", "test_role_molecule.py": "molecule"}


def _module_fixture_group(item):
    """The group of a test that uses a parametrized module-scoped fixture: its file and that parameter.

    Such a fixture (a cluster with a backup and a history, set up in a minute or more) is built once
    per parameter on every worker that runs one of its tests: tests dealt out one by one build each
    twice. One group per parameter builds it once, and a file's groups still spread over the workers.
    """
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    # pytest's own record of each parameter's scope, which it sorts the tests by.
    params = sorted(name for name, scope in callspec._arg2scope.items() if getattr(scope, "value", scope) == "module")
    if not params:
        return None
    # No '[' or ']': xdist reads the group after the last '@' only when no ']' follows it.
    values = ["-".join(map(str, value)) if isinstance(value, tuple) else str(value)
              for value in (callspec.params[name] for name in params)]
    return f"{Path(str(item.fspath)).name}:" + ",".join(f"{name}={value}" for name, value in zip(params, values))


# First: xdist's own hook turns the markers into the groups it schedules by.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        groups = [SERIAL_GROUPS[part] for part in Path(str(item.fspath)).parts if part in SERIAL_GROUPS]
        for group in groups:
            item.add_marker(pytest.mark.xdist_group(group))
        if not groups and item.get_closest_marker("xdist_group") is None:
            group = _module_fixture_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
