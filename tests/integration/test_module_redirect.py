"""The old module name pg_restore still works: meta/runtime.yml routes it to pg_backup_restore, with a deprecation.

PostgreSQL's own pg_restore reads pg_dump archives, so the physical restore
module is pg_backup_restore; playbooks written for the old name must keep
running until the name goes (1.0.0), and say so when they run.
"""

import json

from runner import ansible_env, localhost_inventory, run_dir, run_playbook


def _play(directory, module, backup_dir):
    playbook = directory / "play.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Restore through " + module,
                   module: {"backup_dir": str(backup_dir), "data_directory": str(directory / "restored")}}],
    }]))
    return playbook


def test_the_old_name_runs_the_new_module_and_warns(tmp_path):
    results = {}
    for module in ("pgexclusive.backup.pg_restore", "pgexclusive.backup.pg_backup_restore"):
        directory = run_dir(tmp_path, module.rsplit(".", 1)[1])
        run = run_playbook(_play(directory, module, tmp_path / "no-such-backup"),
                           localhost_inventory(directory / "inventory.yml"), directory, args=["--check"],
                           env=ansible_env(ANSIBLE_DEPRECATION_WARNINGS="1"))
        results[module] = run
    old, new = results["pgexclusive.backup.pg_restore"], results["pgexclusive.backup.pg_backup_restore"]
    # Both reach the restore engine, which refuses a backup directory without a record: the same module ran.
    for run in (old, new):
        assert run.rc != 0, run.output
        assert "holds no readable backup.json" in run.output, run.output
    flat = " ".join(old.output.split())
    assert "deprecated" in flat.lower() and "pg_backup_restore instead" in flat, old.output
    assert "pg_backup_restore instead" not in " ".join(new.output.split()), new.output
