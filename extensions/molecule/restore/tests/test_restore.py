"""PG 15 + extension: the backup restored by playbooks/restore.yml to a moment between two batches of rows."""

import json
import os

from verifier_fixtures import STATE_DIR


def test_one_complete_backup_and_server_out_of_backup_mode(backups, in_backup):
    assert [r["status"] for r in backups.values()] == ["complete"]
    assert not in_backup()


def test_the_restored_server_runs_promoted_in_its_own_directory(host, state):
    result = json.loads(host.file(os.path.join(STATE_DIR, "restore.json")).content_string)
    assert result["backup_dir"] == os.path.join(state["dest"], result["label"])
    assert result["data_directory"] == state["restored"]["data_dir"] and result["target"] == "time"
    assert result["started"] and result["running"] and result["promoted"] and result["timeline"] == 2
    pid = int(host.file(os.path.join(state["restored"]["data_dir"], "postmaster.pid")).content_string.split()[0])
    assert host.file("/proc/%d" % pid).is_directory, "the restored postmaster runs"


def test_the_restored_server_holds_the_rows_up_to_the_moment(rows):
    assert rows(restored=True) == {"before": 500, "batch 1": 100}


def test_the_live_server_holds_every_row(rows):
    assert rows() == {"before": 500, "batch 1": 100, "batch 2": 100}
