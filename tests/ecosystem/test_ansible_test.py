"""ansible-test sanity and units from a tree at ansible_collections/pgexclusive/backup."""

import pytest

from tooling import BIN, run, shown

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_sanity_passes_without_ignores(collection_tree, pip_bootstrap):
    assert not list((collection_tree / "tests" / "sanity").glob("ignore-*.txt")), "no ignore files"
    proc = run([BIN / "ansible-test", "sanity", "--venv", "--python", "3.11", "--color", "no"], cwd=collection_tree)
    assert proc.returncode == 0, shown(proc)
    # "All targets skipped" also exits 0: make sure the modules were really checked.
    assert 'Running sanity test "validate-modules"' in proc.stdout + proc.stderr, shown(proc)


def test_units_pass(collection_tree, pip_bootstrap):
    proc = run([BIN / "ansible-test", "units", "--venv", "--python", "3.11", "--color", "no"], cwd=collection_tree)
    assert proc.returncode == 0, shown(proc)
    assert " passed" in proc.stdout, shown(proc)
