"""The collection as a package: changelog, execution environment, lint."""

import os
import shutil
import subprocess

from tooling import BIN, OUTPUT, REPO, run, shown


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


def clean_clone(target):
    """The working tree's files as a fresh clone holds them (tracked and new, nothing ignored), in a git repository."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() or source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    return target


def test_ansible_lint_passes_as_a_contributor_runs_it(tmp_path):
    """`ansible-lint` at the root of a clean clone, with no collection path or Ansible setting of the test suite's."""
    clone = clean_clone(tmp_path / "clone")
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
