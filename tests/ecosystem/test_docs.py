"""The documentation stays in step with the code: ansible-doc, the roles' READMEs, docs/troubleshooting.md, the links."""

import ast
import json
import os
import re

import pytest
import yaml

from tooling import BIN, REPO, run, shown

MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if not p.name.startswith("_"))
ROLES = ("exclusive_backup", "restore")


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module(module):
    fqcn = f"pgexclusive.backup.{module}"
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    text = run([BIN / "ansible-doc", "-t", "module", fqcn], env=env)
    assert text.returncode == 0 and "OPTIONS" in text.stdout and "EXAMPLES" in text.stdout, shown(text)
    as_json = run([BIN / "ansible-doc", "-t", "module", "--json", fqcn], env=env)
    assert as_json.returncode == 0, shown(as_json)
    doc = json.loads(as_json.stdout)[fqcn]
    assert doc["doc"]["short_description"] and doc["doc"]["description"], doc["doc"]
    assert doc["examples"].strip(), f"{fqcn} has no EXAMPLES"
    assert doc["return"], f"{fqcn} has no RETURN"
    assert all(v.get("description") for v in doc["return"].values()), f"{fqcn}: a return value lacks a description"


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_the_role(role):
    proc = run([BIN / "ansible-doc", "-t", "role", f"pgexclusive.backup.{role}"],
               env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0 and f"{role}_" in proc.stdout, shown(proc)


def role_options(role):
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_and_defaults_follow_the_argument_specs(role):
    readme = (REPO / "roles" / role / "README.md").read_text()
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    options = role_options(role)
    assert not [name for name in options if f"`{name}`" not in readme], "variables missing from the role README"
    for name, spec in options.items():
        if spec.get("required"):
            assert name not in defaults, f"{name} is required, yet has a default"
        else:
            assert name in defaults, f"{name} has no default in defaults/main.yml"
            assert defaults[name] == spec.get("default"), f"{name}: defaults/main.yml and argument_specs differ"
    public = [name for name in defaults if not name.startswith("__")]
    assert not [name for name in public if name not in options], "defaults without an argument spec"


def _module_spec(name):
    from ansible_collections.pgexclusive.backup.plugins.module_utils import preflight, restore
    from ansible_collections.pgexclusive.backup.plugins.module_utils.copy import backup_copy as copy
    return {"copy": copy.copy_argument_spec, "preflight": preflight.preflight_argument_spec,
            "restore": restore.restore_argument_spec}[name]()


# Role variables with choices, and the module option they are passed to: YAML cannot import the
# modules' constants, so the role's lists are checked against them here.
CHOICES = [
    ("exclusive_backup", "exclusive_backup_method", "copy", "method"),
    ("exclusive_backup", "exclusive_backup_compression", "copy", "compression"),
    ("exclusive_backup", "exclusive_backup_verify_archiving", "preflight", "verify_archiving"),
    ("exclusive_backup", "exclusive_backup_ssl_mode", "preflight", "ssl_mode"),
    ("restore", "restore_target", "restore", "target"),
    ("restore", "restore_target_action", "restore", "target_action"),
]


@pytest.mark.parametrize("role,variable,spec,option", CHOICES, ids=[c[1] for c in CHOICES])
def test_role_choices_are_the_modules_choices(role, variable, spec, option):
    assert role_options(role)[variable]["choices"] == list(_module_spec(spec)[option]["choices"])


def test_every_role_variable_with_choices_is_checked():
    checked = {(role, variable) for role, variable, _spec, _option in CHOICES}
    with_choices = {(role, name) for role in ROLES for name, spec in role_options(role).items() if "choices" in spec}
    assert with_choices == checked


# A format placeholder in an error message (%s, %d, %r, %(name)s, %5.1f).
PLACEHOLDER = re.compile(r"%(\([^)]*\))?[-#0 +]*\d*(\.\d+)?[sdrif]")


def _literal(node):
    """The message's format string: "..." or "..." % args."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _literal(node.left)
    return None


def error_messages():
    """(where, message) for every BackupError/DatabaseError and fail_json(msg=...) with a literal message."""
    found = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            message = None
            if name in ("BackupError", "DatabaseError") and node.args:
                message = _literal(node.args[0])
            elif name == "fail_json":
                message = next((_literal(k.value) for k in node.keywords if k.arg == "msg"), None)
            if message:
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", message))
    return found


def test_troubleshooting_covers_every_error_message():
    page = (REPO / "docs" / "troubleshooting.md").read_text()
    section = page[page.index("# Troubleshooting"):]
    section = " ".join(section.replace("\\|", "|").split())
    messages = error_messages()
    assert len(messages) > 40, "the scan found too few messages to be working"
    missing = []
    for where, message in messages:
        # The message's longest fixed text must appear in the troubleshooting section.
        fixed = max(PLACEHOLDER.split(message.replace("%%", "%")), key=lambda s: len((s or "").strip())).strip()
        if fixed not in section:
            missing.append(f"{where}: {message}")
    assert not missing, "\n".join(missing)


LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "roles").glob("*/README.md"))]


def _anchors(page):
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _hash, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(target)
    assert not broken, broken
