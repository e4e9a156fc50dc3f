"""The repository host after the run, over SSH: one whole backup per database host, owned by the repository's user."""

import json

testinfra_hosts = ["repository"]


def repository_dir(result):
    """user, path of the backup in the repository, from 'user@host:/path/<label>'."""
    login, location = result["repository"].split("@", 1)
    return login, location.split(":", 1)[1]


def test_every_database_host_sent_its_backup_here(variables, results):
    assert sorted(results) == sorted(variables["groups"]["postgresql"])
    for name, result in results.items():
        assert result["repository"].split("@", 1)[1].startswith(variables["ansible_host"] + ":"), (name, result)


def test_each_backup_is_the_copy_and_its_record_written_last(host, results):
    for name, result in results.items():
        login, path = repository_dir(result)
        backup = host.file(path)
        assert (backup.user, backup.mode) == (login, 0o700), name
        # No backup.json.part: the record was renamed into place whole.
        assert sorted(backup.listdir()) == ["backup.json", "backup_manifest", "base.tar.gz"], name
        for member in ("backup.json", "backup_manifest", "base.tar.gz"):
            stored = host.file(f"{path}/{member}")
            assert (stored.user, stored.mode) == (login, 0o600), (name, member)
        record = json.loads(host.file(f"{path}/backup.json").content_string)
        assert record == result["record"], name
        assert record["status"] == "complete" and record["label"] == result["label"]


def test_each_copy_holds_its_own_backup_label(host, results):
    for name, result in results.items():
        _login, path = repository_dir(result)
        assert host.run("gzip -t %s", f"{path}/base.tar.gz").rc == 0, f"{name}: base.tar.gz is not whole"
        label = host.check_output("tar -xzOf %s backup_label", f"{path}/base.tar.gz")
        record = result["record"]
        assert f"LABEL: {result['label']}" in label.splitlines(), (name, label)
        assert f"START WAL LOCATION: {record['start_lsn']} " in label, (name, label)
        # 15+ recovery waits for the end of the backup only with this method (the copy's label, fixed by the role).
        method = "streamed" if record["api"] == "extension" else "pg_start_backup"
        assert f"BACKUP METHOD: {method}" in label.splitlines(), (name, label)


def test_nothing_still_writes_into_the_repository(host, results):
    running = host.check_output("ps -e -ww -o pid=,args=")
    for name, result in results.items():
        assert repository_dir(result)[1] not in running, f"a process still writes {name}'s backup"
