"""playbooks/catalog.yml over SSH on the fleet's repository host, where the database hosts' copies land.

Every database host (14, 15, 18) is backed up to the repository with tar and
its WAL included; one copy is then damaged in the repository (a byte of its
archive changed, as a bad disk would). The catalog runs on the repository host
as the repository's login user, over SSH with the fleet's host keys checked,
with verify_files: each host's backup is listed under its own cluster, the
damaged one is not restorable and says why, the others are. Every other
backup the session's fleet tests left there is listed with the status its
backup.json holds. Nothing in the repository changes.
"""

import json
import tarfile

import pytest

from runner import REPO, ansible_env, run_dir, run_playbook
from test_fleet import run_backup
from test_fleet_restore import repository_state

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet")]


def custom_stats(output):
    """The catalog as set_stats published it: {host: {summary, clusters, backups}}."""
    stats = output[output.index("CUSTOM STATS"):].split("RUN:", 1)[1].lstrip()
    return json.JSONDecoder().raw_decode(stats)[0]["pg_backup_catalog"]


def damage_one_byte(path):
    """One byte of the largest file in the tar changed, as a bad disk would: a data byte, never a header or padding."""
    with tarfile.open(str(path)) as tar:
        member = max((m for m in tar.getmembers() if m.isreg()), key=lambda m: m.size)
    with path.open("r+b") as handle:
        handle.seek(member.offset_data + member.size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return member.name


def test_the_catalog_on_the_repository_host_over_ssh(fleet, fleet_hosts, scratch):
    archives = {h.name: {"exclusive_backup_wal_archive_dir": str(h.cluster.archive_dir)} for h in fleet_hosts}
    run = run_backup(fleet, scratch, host_vars=archives, exclusive_backup_include_wal=True, **fleet.repository_vars())
    assert run.rc == 0, run.output[-6000:]
    labels = {h.name: run.results[h.name]["result"]["label"] for h in fleet_hosts}
    sids = {h.name: str(h.cluster.value("SELECT system_identifier FROM pg_control_system()")) for h in fleet_hosts}
    damaged_host = fleet_hosts[0].name
    damaged_file = damage_one_byte(fleet.repository_dir / labels[damaged_host] / "base.tar")
    before = repository_state(fleet.repository_dir)

    directory = run_dir(scratch, "catalog")
    inventory = fleet.write_inventory(directory / "inventory.json")
    variables = directory / "vars.json"
    variables.write_text(json.dumps({"catalog_hosts": "repository", "catalog_dest": str(fleet.repository_dir),
                                     "catalog_verify_files": True}))
    listed = run_playbook(REPO / "playbooks" / "catalog.yml", inventory, directory, args=["-e", f"@{variables}"],
                          env=ansible_env(ANSIBLE_HOST_KEY_CHECKING="1", ANSIBLE_PIPELINING="0",
                                          ANSIBLE_SHOW_CUSTOM_STATS="1"))
    assert listed.rc == 0, listed.output[-6000:]
    recap = listed.output.split("PLAY RECAP")[1].split("CUSTOM STATS")[0]
    assert f"ok: [{fleet.repo.name}]" in listed.output and not any(h.name in recap for h in fleet_hosts), recap
    assert repository_state(fleet.repository_dir) == before, "the catalog changed the repository"

    catalog = custom_stats(listed.output)[fleet.repo.name]
    rows = {r["label"]: r for r in catalog["backups"]}
    for fleet_host in fleet_hosts:
        row = rows[labels[fleet_host.name]]
        assert row["status"] == "complete" and row["wal_included"] and row["cluster"]["system_identifier"] == \
            sids[fleet_host.name], row
        if fleet_host.name == damaged_host:
            assert row["restorable"] is False and [p["kind"] for p in row["problems"]] == ["copy_differs"], row
            # The member whose bytes changed is named, as pg_verifybackup would name it.
            assert f"{damaged_file.lstrip('./')} does not have the SHA256 checksum the manifest lists" in \
                row["problems"][0]["message"], row["problems"]
        else:
            assert row["restorable"] is True and row["problems"] == [], row
        cluster = next(c for c in catalog["clusters"] if c["system_identifier"] == sids[fleet_host.name])
        assert labels[fleet_host.name] in cluster["backups"]
    for label, row in rows.items():
        record = fleet.repository_dir / label / "backup.json"
        if record.is_file():
            assert row["status"] == json.loads(record.read_text())["status"], label
    assert catalog["summary"]["backups"] == len(rows) >= len(fleet_hosts)
    shown = listed.output.split("TASK [Show the catalog]")[1].split("TASK [")[0]
    for label in labels.values():
        assert f'"  {label}' in shown, "the table shows " + label
    assert "! copy_differs:" in shown, shown
