"""Each database host after the run, over SSH: out of backup mode, the backup recorded as stopped, nothing left running."""

import hashlib
import json

testinfra_hosts = ["postgresql"]


def state_record_path(host, state_dir, label):
    """The state record of ``label``: <state_dir>/<system identifier>/<hash of the label>.json."""
    name = hashlib.sha256(label.encode("utf-8")).hexdigest()[:24] + ".json"
    found = [f"{state_dir}/{cluster}/{name}" for cluster in host.file(state_dir).listdir()
             if host.file(f"{state_dir}/{cluster}/{name}").exists]
    assert len(found) == 1, f"one state record of {label} expected in {state_dir}, found {found}"
    return found[0]


def test_the_run_is_complete_and_went_to_the_repository(result, variables):
    assert result["status"] == "complete", result
    assert result["repository"] == f"{variables['exclusive_backup_repository']}/{result['label']}"
    assert result["record"]["status"] == "complete" and result["record"]["stop_lsn"]


def test_the_server_is_out_of_backup_mode(host, info, sql):
    assert info["server_running"] is True
    assert info["in_backup"] is False, info.get("backup")
    assert not host.file(f"{info['data_directory']}/backup_label").exists, "backup_label is still in place"
    assert sql("SELECT pg_is_in_backup()") == "False"


def test_the_data_directory_is_the_servers_alone(host, info):
    data = host.file(info["data_directory"])
    assert (data.user, data.group, data.mode) == ("postgres", "postgres", 0o700)
    found = host.run("find %s ! -user postgres", info["data_directory"])
    # The server removes files while find walks the directory: those are not found, the rest is.
    assert all("No such file or directory" in line for line in found.stderr.splitlines()), found.stderr
    assert found.stdout == "", f"files in the data directory the server's OS user does not own:\n{found.stdout}"


def test_the_state_record_says_stopped_and_its_watchdog_is_gone(host, variables, result, info):
    label = result["label"]
    mine = [r for r in info["state_records"] if r["label"] == label]
    assert len(mine) == 1, info["state_records"]
    record = mine[0]
    assert record["outcome"] == record["effective_outcome"] == "stopped", record
    assert record["stop_lsn"] == result["record"]["stop_lsn"]
    assert record["start_lsn"] == result["record"]["start_lsn"]
    assert record["watchdog_pid"], "the start left no safety stop on the host"
    assert record["watchdog_running"] is False

    path = state_record_path(host, variables["exclusive_backup_state_dir"], label)
    assert json.loads(host.file(path).content_string)["outcome"] == "stopped"
    state_file, cluster_dir = host.file(path), host.file(path.rsplit("/", 1)[0])
    assert (state_file.user, state_file.mode) == ("root", 0o600)
    assert (cluster_dir.user, cluster_dir.mode) == ("root", 0o700)
    # The stop ended the lease: the controller's next renewal finds the backup ended.
    assert not host.file(path[:-len(".json")] + ".lease").exists


def test_no_watchdog_or_copy_of_the_run_is_left(host, variables, result):
    path = state_record_path(host, variables["exclusive_backup_state_dir"], result["label"])
    running = host.check_output("ps -e -ww -o pid=,args=")
    assert path not in running, "a watchdog of this run's backup is still running"
    assert variables["exclusive_backup_ssh_key"] not in running, "an ssh to the repository is still running"


def test_the_host_keeps_the_record_only(host, result):
    backup_dir = host.file(result["backup_dir"])
    assert (backup_dir.user, backup_dir.mode) == ("root", 0o700)
    # The copy went to the repository; the host keeps the record and the manifest read back from the repository.
    assert sorted(backup_dir.listdir()) == ["backup.json", "backup_manifest"]
    manifest = host.file(f"{result['backup_dir']}/backup_manifest")
    assert manifest.content_string.count('"Path"') == result["manifest"]["files"] > 900
    record = host.file(f"{result['backup_dir']}/backup.json")
    assert (record.user, record.mode) == ("root", 0o644)
    assert json.loads(record.content_string) == result["record"]
