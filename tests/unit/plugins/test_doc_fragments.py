"""The doc fragments are the one place their options are documented, and agree with the code.

The default state_dir is written in Python once (safety_stop/records.py's
DEFAULT_STATE_DIR, which every argument spec uses). YAML cannot import it, so
the doc fragment, the roles' defaults and argument specs are checked against it
here; no module documents state_dir or spells the path itself.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.pgexclusive.backup.plugins.doc_fragments import checks, state_dir
from ansible_collections.pgexclusive.backup.plugins.module_utils.restore.verify_restore import check_options
from ansible_collections.pgexclusive.backup.plugins.module_utils.safety_stop.records import DEFAULT_STATE_DIR

PLUGINS = Path(state_dir.__file__).resolve().parents[1]
ROOT = PLUGINS.parent
MODULES = sorted((PLUGINS / "modules").glob("*.py"))
ROLES = ROOT / "roles"


def module_documentation(path):
    """A module's DOCUMENTATION string, read without running the module."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            return node.value.value
    raise AssertionError("%s has no DOCUMENTATION" % path.name)


def fragments_of(doc):
    return doc.get("extends_documentation_fragment") or []


def test_the_state_dir_fragment_documents_the_default_the_code_uses():
    option = yaml.safe_load(state_dir.ModuleDocFragment.DOCUMENTATION)["options"]["state_dir"]
    assert option["default"] == DEFAULT_STATE_DIR
    assert option["type"] == "path"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_module_documents_state_dir_itself(path):
    text = module_documentation(path)
    doc = yaml.safe_load(text)
    assert DEFAULT_STATE_DIR not in text
    if "state_dir" in (doc.get("options") or {}):
        pytest.fail("%s documents state_dir itself: extend pgexclusive.backup.state_dir instead" % path.name)


def test_the_modules_with_a_state_dir_extend_the_fragment():
    extending = {p.stem for p in MODULES if "pgexclusive.backup.state_dir" in fragments_of(yaml.safe_load(module_documentation(p)))}
    assert extending == {"pg_backup_info", "pg_backup_preflight", "pg_clear_backup_label", "pg_start_backup", "pg_stop_backup"}


def role_files(name):
    return sorted(ROLES.glob("*/" + name))


def test_every_role_default_state_dir_is_the_code_default():
    found = 0
    for path in role_files("defaults/main.yml"):
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if key.endswith("state_dir"):
                found += 1
                assert value == DEFAULT_STATE_DIR, "%s: %s" % (path, key)
    assert found


def test_every_role_argument_spec_state_dir_default_is_the_code_default():
    found = 0
    for path in role_files("meta/argument_specs.yml"):
        for entry in yaml.safe_load(path.read_text())["argument_specs"].values():
            for key, option in (entry.get("options") or {}).items():
                if key.endswith("state_dir"):
                    found += 1
                    assert option.get("default") == DEFAULT_STATE_DIR, "%s: %s" % (path, key)
    assert found


def test_a_fallback_state_dir_in_a_role_task_is_the_code_default():
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        for fallback in re.findall(r"state_dir\s*\|\s*default\('([^']*)'\)", path.read_text()):
            assert fallback == DEFAULT_STATE_DIR, str(path)


@pytest.mark.parametrize("variable, option", [("DOCUMENTATION", "checks"), ("FINALIZE", "verify_restore_checks")])
def test_the_checks_fragment_documents_the_suboptions_the_code_takes(variable, option):
    documented = yaml.safe_load(getattr(checks.ModuleDocFragment, variable))["options"][option]
    assert (documented["type"], documented["elements"], documented["default"]) == ("list", "dict", [])
    spec = check_options()
    assert set(documented["suboptions"]) == set(spec)
    for name, suboption in documented["suboptions"].items():
        assert suboption["type"] == spec[name]["type"], name
        assert suboption.get("required", False) == spec[name].get("required", False), name
        assert suboption.get("default") == spec[name].get("default"), name


def test_both_checks_fragments_document_the_same_suboptions_word_for_word():
    """ansible-test wants each fragment a literal, so the suboptions are written twice: they must not drift."""
    checks_doc = yaml.safe_load(checks.ModuleDocFragment.DOCUMENTATION)["options"]["checks"]
    finalize_doc = yaml.safe_load(checks.ModuleDocFragment.FINALIZE)["options"]["verify_restore_checks"]
    assert checks_doc["suboptions"] == finalize_doc["suboptions"]


def test_every_fragment_variable_is_a_string_literal_as_ansible_test_reads_it():
    for path in sorted((PLUGINS / "doc_fragments").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if isinstance(statement, ast.Assign):
                        assert isinstance(statement.value, ast.Constant), "%s: %s is not a literal" % (path.name, statement.targets[0].id)


@pytest.mark.parametrize("module, fragment", [
    ("pg_verify_restore", "pgexclusive.backup.checks"),
    ("pg_backup_finalize", "pgexclusive.backup.checks.finalize"),
])
def test_both_check_options_come_from_the_fragment(module, fragment):
    doc = yaml.safe_load(module_documentation(PLUGINS / "modules" / (module + ".py")))
    assert fragment in fragments_of(doc)
    assert not {"checks", "verify_restore_checks"} & set(doc["options"])
