"""The collection as a package: changelog, execution environment, lint."""

import os

from tooling import BIN, OUTPUT, REPO, copy_working_tree, run, shown


def test_changelog_fragments_lint():
    proc = run([BIN / "antsibull-changelog", "lint"], cwd=REPO)
    assert proc.returncode == 0 and not proc.stdout.strip(), shown(proc)


def test_changelog_generates(collection_tree):
    proc = run([BIN / "antsibull-changelog", "generate"], cwd=collection_tree)
    assert proc.returncode == 0, shown(proc)
    text = (collection_tree / "CHANGELOG.rst").read_text()
    assert "v0.1.0" in text, text


def test_ansible_lint_production_profile_offline():
    proc = run([BIN / "ansible-lint", "--offline", "--profile", "production", "--nocolor"], cwd=REPO,
               timeout=900)
    assert proc.returncode == 0, shown(proc)


def test_ansible_lint_passes_as_a_contributor_runs_it(tmp_path):
    """`ansible-lint` at the root of a clean clone, with no collection path or Ansible setting of the test suite's."""
    clone = copy_working_tree(tmp_path / "clone")
    # A clone tracks every file.
    assert run(["git", "add", "-A"], cwd=clone).returncode == 0
    home = tmp_path / "home"
    home.mkdir()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("ANSIBLE_", "PGX_")) and name != "VIRTUAL_ENV"}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    proc = run([BIN / "ansible-lint", "--nocolor"], cwd=clone, env=env, timeout=900)
    assert proc.returncode == 0, shown(proc)
    assert "could not resolve" not in proc.stdout + proc.stderr, shown(proc)


def test_ansible_builder_creates_a_build_context():
    context = OUTPUT / "ee-context"
    proc = run([BIN / "ansible-builder", "create", "--file", REPO / "execution-environment.yml",
                "--context", context, "--output-filename", "Containerfile"], cwd=REPO)
    assert proc.returncode == 0, shown(proc)
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile or "_build/requirements.yml" in containerfile
    assert (context / "_build" / "requirements.txt").read_text().strip(), "Python requirements reach the image"
    assert "rsync" in (context / "_build" / "bindep.txt").read_text()
