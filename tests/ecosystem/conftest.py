"""Fixtures for the ecosystem checks: a copy of the collection in an ansible_collections tree."""

import shutil
from pathlib import Path

import pytest

from testbed.fixtures import (  # noqa: F401  pylint: disable=unused-import
    clusters, pytest_configure, pytest_unconfigure, scratch, testbed_dir)
from tooling import OUTPUT, copy_working_tree


@pytest.fixture(scope="session")
def collection_tree():
    """The files git knows of (committed or not, ignored ones left out), under ansible_collections/.

    ansible-test insists on running from inside ansible_collections/<ns>/<name>
    and resolves symlinks, so this is a real copy.
    """
    root = OUTPUT / "tree" / "ansible_collections" / "pgexclusive" / "backup"
    shutil.rmtree(root, ignore_errors=True)
    # The tree lies inside this repository's ignored tests/output, and ansible-test lists targets
    # with git: without a repository of its own it finds no targets and passes having checked nothing.
    return copy_working_tree(root)


@pytest.fixture(scope="session")
def pip_bootstrap():
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for version in ("24_2",):
        shutil.copy(Path(__file__).with_name("get_pip_standin.py"), cache / f"get_pip_{version}.py")
