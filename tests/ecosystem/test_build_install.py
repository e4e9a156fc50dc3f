"""The collection as users get it: built with ansible-galaxy, installed, and its playbook run.

The playbook runs from the installed copy only (ANSIBLE_COLLECTIONS_PATH is the
install path, nothing else is on Ansible's search path), so a file that
build_ignore drops by mistake or a wrong meta/runtime.yml fails here. It runs
as the least-privileged backup user docs/installing.md documents, with exactly
the GRANTs it gives, which proves that list.
"""

import json
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import DEFAULT_STATE_DIR
from ansible_collections.pgexclusive.backup.plugins.module_utils.data_directory import system_identifier
from testbed.fixtures import SELECTED
from tooling import BIN, OUTPUT, REPO, run, shown

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BACKUP_USER = "pgx_backup"
# Must exist in the repository while the build runs, and must stay out of the tarball.
NEVER_SHIPPED = re.compile(r"(^|/)(\.git|\.venv|\.pytest_cache|__pycache__)(/|$)|^tests/output(/|$)"
                           r"|\.(pyc|o|so|bc)$|^tests/fixture_extension/results(/|$)")
MUST_SHIP = ["MANIFEST.json", "FILES.json", "meta/runtime.yml", "playbooks/backup.yml",
             "roles/exclusive_backup/meta/argument_specs.yml", "roles/exclusive_backup/tasks/main.yml",
             "plugins/modules/pg_start_backup.py", "plugins/modules/pg_stop_backup.py",
             "plugins/module_utils/session/start.py", "plugins/doc_fragments/connection.py",
             "README.md", "CHANGELOG.rst"]


@pytest.fixture(scope="module")
def tarball():
    out = OUTPUT / "build"
    shutil.rmtree(out, ignore_errors=True)
    proc = run([BIN / "ansible-galaxy", "collection", "build", "--output-path", out, REPO], cwd=REPO)
    assert proc.returncode == 0, shown(proc)
    built = list(out.glob("pgexclusive-backup-*.tar.gz"))
    assert len(built) == 1, shown(proc)
    return built[0]


def test_tarball_ships_the_collection_and_nothing_else(tarball):
    assert (REPO / ".venv").is_dir() and (REPO / "tests" / "output").is_dir(), "nothing to leave out"
    with tarfile.open(tarball) as tar:
        names = [m.name.lstrip("./") for m in tar.getmembers()]
    assert not [n for n in names if NEVER_SHIPPED.search(n)], [n for n in names if NEVER_SHIPPED.search(n)]
    assert not [m for m in MUST_SHIP if m not in names], [m for m in MUST_SHIP if m not in names]
    manifest = json.loads(tar_member(tarball, "MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "pgexclusive"
    assert manifest["collection_info"]["name"] == "backup"


def tar_member(tarball, name):
    with tarfile.open(tarball) as tar:
        return tar.extractfile(name).read().decode()


def only_collections_path(path):
    """The environment with ``path`` the only place Ansible looks for collections.

    The test session puts the repository's own tree on ANSIBLE_COLLECTIONS_PATH
    (tests/conftest.py): left there, galaxy would find the collection already
    installed and the playbook would run from the checkout.
    """
    # The test HOME's Ansible directories stay (tests/conftest.py): without them Ansible writes into the real home.
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("ANSIBLE_") or k in ("ANSIBLE_HOME", "ANSIBLE_REMOTE_TEMP")) and k != "PYTHONPATH"}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(path), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               PATH=f"{BIN}:{os.environ['PATH']}")
    return env


@pytest.fixture(scope="module")
def installed(tarball):
    """A clean collections path holding only the installed tarball."""
    path = OUTPUT / "installed"
    shutil.rmtree(path, ignore_errors=True)
    proc = run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", path, tarball], cwd=OUTPUT,
               env=only_collections_path(path))
    assert proc.returncode == 0, shown(proc)
    root = path / "ansible_collections" / "pgexclusive" / "backup"
    assert (root / "MANIFEST.json").is_file(), shown(proc)
    return path


# The statements docs/installing.md gives, per API (run by a superuser in the database the
# backups connect to: the extension's on 15+); docs/installing.md must hold them as they are here.
_ROLE = [f"CREATE ROLE {BACKUP_USER} LOGIN PASSWORD 'change-me'", f"GRANT pg_monitor TO {BACKUP_USER}"]
_ALSO = ("pg_catalog.pg_read_file(text, bigint, bigint, boolean), pg_catalog.pg_create_restore_point(text),"
         f" pg_catalog.pg_switch_wal() TO {BACKUP_USER}")
GRANTS = {
    "native": _ROLE + ["GRANT EXECUTE ON FUNCTION pg_catalog.pg_start_backup(text, boolean, boolean),"
                       " pg_catalog.pg_stop_backup(boolean, boolean), " + _ALSO],
    "extension": _ROLE + ["GRANT EXECUTE ON FUNCTION pg_catalog.pg_start_backup(text, boolean),"
                          " pg_catalog.pg_stop_backup(), " + _ALSO],
}


@pytest.mark.parametrize("api", sorted(GRANTS))
def test_readme_gives_the_grants_this_test_proves(api):
    readme = " ".join((REPO / "docs" / "installing.md").read_text().split())
    for statement in GRANTS[api]:
        assert statement + ";" in readme, statement


@pytest.fixture(params=SELECTED, ids=lambda m: f"pg{m}")
def cluster(request, clusters):
    """A test bed cluster of each major, with the least-privileged backup user docs/installing.md describes."""
    cluster = clusters(request.param)
    if cluster.pid is None:
        cluster.start()
    for statement in GRANTS[cluster.api]:
        cluster.sql(statement, dbname=cluster.backup_db)
    yield cluster
    cluster.end_backup_if_any()
    cluster.sql(f"DROP OWNED BY {BACKUP_USER}", dbname=cluster.backup_db)
    cluster.sql(f"DROP ROLE {BACKUP_USER}")
    # The modules record their backups per cluster under the state directory.
    identifier = system_identifier(str(cluster.data_dir))
    if identifier:
        shutil.rmtree(Path(DEFAULT_STATE_DIR) / identifier, ignore_errors=True)


def test_installed_playbook_takes_a_restorable_backup_as_the_least_privileged_user(installed, cluster, scratch):
    inventory = scratch / "hosts"
    inventory.write_text(f"[postgresql]\ndb1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    dest = scratch / "backups"
    extravars = scratch / "vars.json"
    extravars.write_text(json.dumps({
        "exclusive_backup_dest": str(dest),
        "exclusive_backup_label": "installed-copy",
        "exclusive_backup_login_user": BACKUP_USER,
        "exclusive_backup_login_unix_socket": str(cluster.socket_dir),
        "exclusive_backup_login_port": cluster.port,
        "exclusive_backup_login_db": cluster.backup_db,
        # A non-superuser cannot read the data_directory setting.
        "exclusive_backup_data_directory": str(cluster.data_dir),
        "exclusive_backup_method": "tar",
        "exclusive_backup_include_wal": True,
        "exclusive_backup_wal_archive_dir": str(cluster.archive_dir),
        "exclusive_backup_verify_restore": True,
    }))
    # The playbook by its FQCN, from a directory outside the repository (no adjacent collections).
    proc = run([BIN / "ansible-playbook", "-vv", "-i", inventory, "pgexclusive.backup.backup",
                "-e", f"@{extravars}"], cwd=scratch, env=only_collections_path(installed), timeout=600)
    assert proc.returncode == 0, shown(proc)
    task_paths = re.findall(r"^task path: (\S+?):\d+$", proc.stdout, re.M)
    assert task_paths and all(p.startswith(str(installed)) for p in task_paths), set(task_paths)

    backup_dir = dest / "installed-copy"
    record = json.loads((backup_dir / "backup.json").read_text())
    assert record["status"] == "complete", record
    assert record["verify_restore"]["ok"] is True, record
    assert list(backup_dir.glob("base.tar*")), sorted(p.name for p in backup_dir.iterdir())
    assert not cluster.in_backup()
