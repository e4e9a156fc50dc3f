"""pg_backup_catalog and playbooks/catalog.yml on real backups of two clusters in one dest.

One module-scoped dest, built once by the role against two test-bed servers:
cluster A holds a complete backup drilled by the role's restore check, and a
complete one (without include_wal) whose first WAL segment is then removed from
a copy of A's archive; cluster B holds a complete plain copy, a failed one (its
snapshot command exits 3) and a complete one whose backup_manifest is then
damaged. Two hand-made entries (a link out of dest, a record that is no JSON)
sit beside them. The module (and in check mode), and the playbook under
ansible-playbook, are asserted on that one dest, which they must leave as it
was, to the mtime.
"""

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from restore_helpers import make_dir
from runner import REPO, ROLE_ENV, ansible_env, localhost_inventory, run_dir, run_playbook, run_tasks, start_role, task
from testbed import Cluster, provide
from testbed.fixtures import SELECTED, handed_out, prefer

# One worker builds the dest once; every test here reads it.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("catalog")]


class Dest:
    """The dest, its clusters and the label of each backup by what it is."""


def sid_of(cluster):
    return str(cluster.value("SELECT system_identifier FROM pg_control_system()"))


def snapshot(top):
    """Every path under ``top`` with its type, size and mtime, links not followed."""
    found = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            found[os.path.relpath(path, top)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def built(clusters, testbed_dir):
    first = prefer((15,))[0]
    others = [m for m in prefer((14,), [m for m in SELECTED if m != first]) if m != first]
    root = Path(tempfile.mkdtemp(prefix="catalog-", dir=str(testbed_dir)))
    root.chmod(0o755)
    handing = [handed_out(clusters(first))]
    own, runs = None, []
    try:
        a = next(handing[0], None)
        if others:
            handing.append(handed_out(clusters(others[0])))
            b = next(handing[1], None)
        else:
            # One major selected: the second cluster is one of the same major, this module's own.
            b = own = Cluster.create(provide(first), root / "second")
        d = Dest()
        d.a, d.b, d.root, d.dest = a, b, root, root / "backups"
        scratch = make_dir(root / "play")
        started = time.time()
        # The two clusters' backups run side by side, as two hosts writing one shared dest do.
        steps = [
            ((a, dict(exclusive_backup_verify_restore=True, exclusive_backup_wal_archive_dir=str(a.archive_dir))),
             (b, dict(exclusive_backup_method="copy"))),
            ((a, {}), (b, dict(exclusive_backup_method="command",
                               exclusive_backup_command="echo snapshot tool broke >&2; exit 3"))),
            ((b, {}),),
        ]
        done = []
        for step in steps:
            # passive: the test bed's archiving is known to work, and an active check switches WAL each run.
            running = [start_role(cluster, scratch, exclusive_backup_dest=str(d.dest),
                                  exclusive_backup_verify_archiving="passive", **role_vars)
                       for cluster, role_vars in step]
            runs.extend(running)
            done.extend(run.wait(600) for run in running)
        (drilled, good, wal_missing, failed, damaged) = done
        for run in (drilled, good, wal_missing, damaged):
            assert run.rc == 0, run.output[-6000:]
        assert failed.rc != 0 and "snapshot tool broke" in failed.output, failed.output[-6000:]
        d.drilled, d.good, d.wal_missing, d.failed, d.damaged = (
            run.result["label"] for run in (drilled, good, wal_missing, failed, damaged))
        d.built_in = time.time() - started
        d.records = dict((label, json.loads((d.dest / label / "backup.json").read_text()))
                         for label in (d.drilled, d.wal_missing, d.good, d.failed, d.damaged))
        # A's archive as it is now, less the first segment the second backup needs; A's own archive is untouched.
        d.archive_a = root / "archive-a"
        shutil.copytree(str(a.archive_dir), str(d.archive_a))
        d.removed = d.records[d.wal_missing]["start_wal_file"]
        (d.archive_a / d.removed).unlink()
        # One checksum in the manifest changed: the manifest no longer matches its own Manifest-Checksum.
        manifest = d.dest / d.damaged / "backup_manifest"
        text = manifest.read_text()
        at = text.index('"Checksum": "') + len('"Checksum": "')
        manifest.write_text(text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:])
        outside = make_dir(root / "outside" / "planted")
        (outside / "backup.json").write_text(json.dumps(dict(d.records[d.good], label="planted")))
        (d.dest / "link-out").symlink_to(outside)
        make_dir(d.dest / "not-json")
        (d.dest / "not-json" / "backup.json").write_text("{ not json")
        d.sid_a, d.sid_b = sid_of(a), sid_of(b)
        d.archives = {d.sid_a: str(d.archive_a), d.sid_b: str(b.archive_dir)}
        d.before = snapshot(d.dest)
        module_args = dict(dest=str(d.dest), archive_dirs=d.archives)
        d.result, d.checked = run_tasks([task("pg_backup_catalog", **module_args),
                                         task("pg_backup_catalog", dest=str(d.dest))])
        d.check_mode = run_tasks([task("pg_backup_catalog", **module_args)], check=True)[0]
        d.after_module = snapshot(d.dest)
        yield d
    finally:
        for run in runs:
            run.cleanup()
        for generator in handing:
            next(generator, None)
        if own is not None:
            own.destroy()
        shutil.rmtree(str(root), ignore_errors=True)


def rows(result):
    return dict((r["label"], r) for r in result["backups"])


def kinds(row):
    return [p["kind"] for p in row["problems"]]


def test_each_backup_row(built):
    d = built
    assert not d.result.get("failed"), d.result
    assert d.result["changed"] is False
    got = rows(d.result)
    assert sorted(got) == sorted([d.drilled, d.wal_missing, d.good, d.failed, d.damaged, "link-out", "not-json"])

    drilled = got[d.drilled]
    assert (drilled["status"], drilled["restorable"], drilled["problems"]) == ("complete", True, [])
    assert drilled["drill"]["ok"] is True and drilled["drill"]["check_ran"] is True, drilled
    assert drilled["wal_checked"] is True and drilled["wal_included"] is False
    record = d.records[d.drilled]
    assert drilled["output_bytes"] == sum(record["output_bytes"].values()) > 0
    for key in ("method", "compression", "start_time", "duration", "copy_duration", "bytes", "timeline", "start_lsn",
                "stop_lsn", "start_wal_file", "stop_wal_file"):
        assert drilled[key] == record.get(key), key
    assert drilled["method"] == "tar" and drilled["bytes"] > 0 and drilled["stop_time"].endswith("Z")
    assert drilled["cluster"] == {"system_identifier": d.sid_a, "host": "localhost",
                                  "data_directory": record["data_directory"]}

    missing = got[d.wal_missing]
    assert (missing["status"], missing["restorable"], kinds(missing)) == ("complete", False, ["wal_missing"])
    assert d.removed in missing["problems"][0]["message"] and str(d.archive_a) in missing["problems"][0]["message"]
    assert "include_wal" in missing["problems"][0]["hint"]
    assert missing["drill"] is None

    good = got[d.good]
    assert (good["status"], good["restorable"], good["method"]) == ("complete", True, "copy")

    failed = got[d.failed]
    assert (failed["status"], failed["restorable"], kinds(failed)) == ("failed", False, ["failed"])
    assert d.records[d.failed]["error"] in failed["problems"][0]["message"]

    damaged = got[d.damaged]
    assert (damaged["status"], damaged["restorable"], kinds(damaged)) == ("complete", False, ["manifest_damaged"])
    assert "Manifest-Checksum" in damaged["problems"][0]["message"]

    assert kinds(got["link-out"]) == ["link"] and str(d.root / "outside") in got["link-out"]["problems"][0]["message"]
    assert got["link-out"]["status"] is None, "the record behind the link is never read"
    assert kinds(got["not-json"]) == ["unreadable_record"] and "not JSON" in got["not-json"]["problems"][0]["message"]


def test_per_cluster_newest_good_and_ages(built):
    d = built
    by_sid = dict((c["system_identifier"], c) for c in d.result["clusters"])
    assert set(by_sid) == {d.sid_a, d.sid_b, None}
    a, b = by_sid[d.sid_a], by_sid[d.sid_b]
    assert a["backups"] == [d.wal_missing, d.drilled], "newest first, by start LSN"
    assert (a["newest_restorable"], a["newest_verified"]) == (d.drilled, d.drilled)
    # The failed run's record may name no system identifier: it joins B by host and data directory.
    assert b["backups"] == [d.damaged, d.failed, d.good] or b["backups"] == [d.damaged, d.good, d.failed], b
    assert (b["newest_restorable"], b["newest_verified"], b["newest_verified_age"]) == (d.good, None, None)
    for cluster, age in ((a, "newest_restorable_age"), (a, "newest_verified_age"), (b, "newest_restorable_age")):
        assert 0 <= cluster[age] < d.built_in + 120, (age, cluster)
    assert sorted(by_sid[None]["backups"]) == ["link-out", "not-json"]
    summary = d.result["summary"]
    assert (summary["backups"], summary["restorable"], summary["unrestorable"], summary["clusters"]) == (7, 2, 5, 3)
    assert summary["wal_checked"] == 4, "every complete backup of either cluster, none of them with its WAL included"


def test_without_an_archive_no_wal_is_checked(built):
    got = rows(built.checked)
    assert got[built.wal_missing]["restorable"] is True and got[built.wal_missing]["wal_checked"] is False
    assert built.checked["summary"]["wal_checked"] == 0


def test_check_mode_is_the_same_and_nothing_under_dest_changed(built):
    d = built
    same, real = copy.deepcopy(d.check_mode), copy.deepcopy(d.result)
    for result in (same, real):
        result.pop("_output", None)
        result.pop("warnings", None)
        result.pop("invocation", None)
        result["summary"].pop("checked_at")
        result.pop("table")
        for cluster in result["clusters"]:
            for key in ("newest_restorable_age", "newest_verified_age"):
                cluster.pop(key)
    assert same == real
    assert d.after_module == d.before, "the catalog wrote under dest"


def test_the_table_shows_every_row_and_problem(built):
    table = built.result["table"]
    assert isinstance(table, list) and all("\n" not in line for line in table)
    text = "\n".join(table)
    for label in (built.drilled, built.wal_missing, built.good, built.failed, built.damaged):
        assert any(line.startswith("  " + label) for line in table), label
    for kind in ("wal_missing", "manifest_damaged", "failed", "link", "unreadable_record"):
        assert "! %s:" % kind in text, kind
    assert "newest restorable: %s (stopped " % built.drilled in text
    assert "newest verified restore: %s (drilled " % built.drilled in text
    assert "newest restorable: %s (stopped " % built.wal_missing in "\n".join(built.checked["table"])


def test_the_playbook_prints_the_table_and_publishes_the_result(built):
    d = built
    variables = d.root / "catalog-vars.json"
    variables.write_text(json.dumps({"catalog_hosts": "localhost", "catalog_dest": str(d.dest),
                                     "catalog_archive_dirs": d.archives}))
    run = run_playbook(REPO / "playbooks" / "catalog.yml", localhost_inventory(d.root / "inventory.yml"),
                       run_dir(d.root, "catalog"), args=("-e", f"@{variables}"),
                       env=ansible_env(ANSIBLE_SHOW_CUSTOM_STATS="1", **ROLE_ENV))
    assert run.rc == 0, run.output[-6000:]
    assert "! wal_missing: The WAL segment %s" % d.removed in run.output, run.output[-6000:]
    assert "newest verified restore: %s" % d.drilled in run.output
    stats = run.output[run.output.index("CUSTOM STATS"):]
    assert "pg_backup_catalog" in stats and d.sid_a in stats and d.wal_missing in stats, stats[:3000]
    assert snapshot(d.dest) == d.before, "the playbook wrote under dest"
