"""The collection as a package: changelog, execution environment, lint."""

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


def test_ansible_builder_creates_a_build_context():
    context = OUTPUT / "ee-context"
    proc = run([BIN / "ansible-builder", "create", "--file", REPO / "execution-environment.yml",
                "--context", context, "--output-filename", "Containerfile"], cwd=REPO)
    assert proc.returncode == 0, shown(proc)
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile or "_build/requirements.yml" in containerfile
    assert (context / "_build" / "requirements.txt").read_text().strip(), "Python requirements reach the image"
    assert "rsync" in (context / "_build" / "bindep.txt").read_text()
