"""The exclusive_backup role in production layouts, through the real ansible-playbook.

Every session cluster of the test bed has pg_wal on a directory of its own
(initdb --waldir); on top of that the cases add what production has and the
earlier suites did not: a tablespace, two clusters sharing one destination, a
least-privilege login, a server that restarts, crashes or is stopped by
someone else during the copy, labels with line separators, a directory the
copy cannot read, a symbolic link swapped in during the copy. After each case
live_checks asserts on the live server as well as on the backup: not in backup
mode, archiving works with no new failure, no foreign timeline in the live WAL
directory or the archive, nothing there owned by root, exactly the committed
rows after a crash and a restart; and a complete backup restores.

Majors (PGX_MAJORS selects; a case whose majors are not selected runs on the
first selected one instead, so no feature hides behind a skip):

- a (pg_wal elsewhere + tablespace, tar/copy/rsync, include_wal, verify_restore),
  c (least-privilege login) and d (backup ended during the copy): every major.
  They depend on the server: the label fix and the restore on 15+, the native
  API on 14, which privileges exist and what they allow, how each major ends
  an exclusive backup on restart and crash (14 cancels it on shutdown, the
  extension keeps backup_label).
- b (retention, two clusters in one dest): 15 only. Retention reads backup
  records and system identifiers, which no major changes.
- e (label separators): 14 and 15. The module refuses the label before any
  SQL; 14 covers the native API and 15 the extension (16 and 18 run the same
  extension code path as 15).
- f (unreadable directory) and g (symlink swapped in during the copy): 15 only.
  They test the copy, which reads files and never asks the server.

Each case prints MEASURED lines (pytest -s), and the module prints the wall
time it spent per major at its end.
"""

import json
import os
import pwd
import re
import shutil
import time
import uuid
from collections import defaultdict

import pytest

from live_checks import Checks, LiveCheck, assert_backup_layout, read_record
from restore_proof import BASE_ROWS, Writer, check_rows_against_stop, create_table, restore_backup, restored_ids
from runner import ansible_env, connection, run_dir, run_playbook, run_role, run_tasks, task
from testbed.osuser import OS_USER, chown_postgres
from watchdogs import record, wait_for, watchdog_running

ENDED_WITHOUT_STOP = re.compile(r"ended\b.*\b(without|before)\b.*\bstop", re.I | re.S)


def _ids(major):
    return f"pg{major}"


# -- timing -------------------------------------------------------------------

_WALL = defaultdict(float)
_COUNT = defaultdict(int)


@pytest.fixture(scope="module", autouse=True)
def _report_wall_time():
    yield
    for major in sorted(_WALL):
        print(f"\nMEASURED production layouts pg{major}: {_WALL[major]:.1f} s wall time over {_COUNT[major]} tests")
    print(f"\nMEASURED production layouts total: {sum(_WALL.values()):.1f} s")


@pytest.fixture(autouse=True)
def _time_test(request):
    started = time.monotonic()
    yield
    params = getattr(request.node, "callspec", None)
    major = None
    if params is not None:
        major = next((v for k, v in params.params.items() if k.endswith("pg") and isinstance(v, int)), None)
    _WALL[major or 0] += time.monotonic() - started
    _COUNT[major or 0] += 1


# -- fixtures -----------------------------------------------------------------

@pytest.fixture
def databases():
    """databases(cluster): a fresh database with table t holding BASE_ROWS rows; dropped after the test."""
    made = []

    def create(cluster):
        name = cluster.create_database()
        made.append((cluster, name))
        create_table(cluster, name)
        return name

    yield create
    for cluster, name in made:
        if cluster.pid is None:
            cluster.start()
        cluster.end_backup_if_any()
        cluster.drop_database(name)


def label_for(case, cluster):
    return f"pl-{case}-pg{cluster.major}-{uuid.uuid4().hex[:8]}"


def role(cluster, scratch, state_dir, **role_vars):
    role_vars.setdefault("exclusive_backup_dest", str(scratch / "backups"))
    role_vars.setdefault("exclusive_backup_state_dir", str(state_dir))
    role_vars.setdefault("exclusive_backup_archive_timeout", 60)
    return run_role(cluster, scratch, **role_vars)


def tail(run, size=6000):
    return run.output[-size:]


# -- a. pg_wal on its own directory, a tablespace, every plain and tar method --------------------

@pytest.mark.parametrize("method", ["tar", "copy", "rsync"])
def test_wal_elsewhere_and_tablespace_restore_exactly_the_committed_rows(pg, method, databases, scratch, state_dir,
                                                                         restore):
    assert pg.wal_dir != pg.data_dir / "pg_wal" and (pg.data_dir / "pg_wal").is_symlink(), \
        "the test bed's clusters must have pg_wal outside the data directory"
    dbname = databases(pg)
    ts_name = f"ts_{dbname}"
    location = pg.create_tablespace(ts_name)
    checks = Checks()
    try:
        pg.sql(f"CREATE TABLE in_ts (id int) TABLESPACE {ts_name}", dbname=dbname)
        pg.sql("INSERT INTO in_ts SELECT generate_series(1, 500)", dbname=dbname)
        live = LiveCheck(pg, dbname)
        label = label_for(f"a-{method}", pg)
        with Writer(pg, dbname) as writer:
            run = role(pg, scratch, state_dir, exclusive_backup_label=label, exclusive_backup_method=method,
                       exclusive_backup_include_wal=True, exclusive_backup_wal_archive_dir=str(pg.archive_dir),
                       exclusive_backup_verify_restore=True, exclusive_backup_max_duration=600)
        assert writer.error is None, writer.error
        backup_dir = scratch / "backups" / label
        print(f"\nMEASURED a pg{pg.major} {method}: role run {run.seconds:.1f} s, {len(writer.rows)} rows committed "
              "during it")
        with checks("the run"):
            assert run.rc == 0, tail(run)
            saved = read_record(backup_dir)
            assert saved["status"] == "complete" and run.result["status"] == "complete", saved
            assert saved["stop_lsn"], saved
            assert saved["verify_restore"]["ok"] is True, saved
            assert saved["stop_wal_file"] in saved["wal_included"], saved
            assert saved["tablespaces"] and saved["tablespaces"][0]["path"] == str(location), saved
        live.finish(expected_rows=BASE_ROWS + len(writer.rows), checks=checks)
        with checks("the backup's layout"):
            assert_backup_layout(pg, backup_dir)
        if not checks.failures:
            with checks("the restore"):
                restored, seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
                assert restored.value("SELECT count(*) FROM in_ts", dbname=dbname) == 500
                must_in, _out = check_rows_against_stop(writer, restored_ids(restored, dbname), saved["stop_lsn"])
                assert must_in > 0, "the writer committed nothing during the backup"
                print(f"MEASURED a pg{pg.major} {method}: restore {seconds:.1f} s, live checks {live.measured}")
        checks.done()
    finally:
        pg.drop_database(dbname)
        pg.sql(f"DROP TABLESPACE IF EXISTS {ts_name}")


# -- b. two clusters sharing one destination, retention ---------------------------------------------

def test_retention_keeps_each_clusters_newest_and_leaves_the_others_alone(one_pg, another_cluster, databases, scratch,
                                                                          state_dir, restore):
    first = one_pg
    second = another_cluster(first.major)
    assert second.wal_dir != second.data_dir / "pg_wal"
    lives = [LiveCheck(c, databases(c)) for c in (first, second)]
    dest = scratch / "shared"
    common = dict(exclusive_backup_dest=str(dest), exclusive_backup_retention=1,
                  exclusive_backup_verify_archiving="passive", exclusive_backup_max_duration=600)
    labels = {}
    expected = {"a1": {"a1"}, "b1": {"a1", "b1"}, "a2": {"a2", "b1"}, "b2": {"a2", "b2"}}
    why = {"b1": "the first backup of the second cluster removes nothing of the first's",
           "a2": "the first cluster's a1 goes, the second's b1 stays",
           "b2": "the second cluster's b1 goes, the first's a2 stays"}
    checks = Checks()
    started = time.monotonic()
    for name, cluster in [("a1", first), ("b1", second), ("a2", first), ("b2", second)]:
        labels[name] = label_for(f"b-{name}", cluster)
        run = role(cluster, scratch, state_dir, exclusive_backup_label=labels[name], **common)
        assert run.rc == 0, tail(run)
        assert read_record(dest / labels[name])["status"] == "complete"
        present = {n for n, label in labels.items() if (dest / label).exists()}
        with checks(f"retention after {name}"):
            assert present == expected[name], f"after {name} ({why.get(name, '')}): {sorted(present)}"
            for other in present - {name}:
                assert read_record(dest / labels[other])["status"] == "complete", f"{other} was changed"
    print(f"\nMEASURED b pg{first.major}: four backups of two clusters in one dest, retention 1: "
          f"{time.monotonic() - started:.1f} s")
    for live in lives:
        live.finish(expected_rows=BASE_ROWS, checks=checks)
    for name, live in (("a2", lives[0]), ("b2", lives[1])):
        if not (dest / labels[name]).exists():
            continue
        with checks(f"{name} restores"):
            assert_backup_layout(live.cluster, dest / labels[name])
            restored, _seconds = restore_backup(live.cluster, dest / labels[name], scratch / f"restore-{name}", restore)
            assert restored.value("SELECT count(*) FROM t", dbname=live.dbname) == BASE_ROWS
            assert restored.value("SELECT system_identifier FROM pg_control_system()") == \
                live.cluster.value("SELECT system_identifier FROM pg_control_system()"), f"{name} is another cluster's"
    checks.done()


# -- c. a least-privilege login -----------------------------------------------------------------------

def test_least_privilege_login_with_pg_monitor_completes_and_restores(pg, login, databases, scratch, state_dir,
                                                                      restore):
    user = login(pg, monitor=True)
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    label = label_for("c-monitor", pg)
    checks = Checks()
    with Writer(pg, dbname) as writer:
        run = role(pg, scratch, state_dir, exclusive_backup_label=label, exclusive_backup_login_user=user,
                   exclusive_backup_include_wal=True, exclusive_backup_wal_archive_dir=str(pg.archive_dir),
                   exclusive_backup_verify_restore=True, exclusive_backup_max_duration=600)
    assert writer.error is None, writer.error
    print(f"\nMEASURED c pg{pg.major} least privilege with pg_monitor: role run {run.seconds:.1f} s")
    backup_dir = scratch / "backups" / label
    with checks("the run"):
        assert run.rc == 0, tail(run)
        saved = read_record(backup_dir)
        assert saved["status"] == "complete" and saved["stop_lsn"], saved
    live.finish(expected_rows=BASE_ROWS + len(writer.rows), checks=checks)
    if not checks.failures:
        with checks("the backup restores"):
            assert_backup_layout(pg, backup_dir)
            restored, _seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
            check_rows_against_stop(writer, restored_ids(restored, dbname), saved["stop_lsn"])
    checks.done()


def test_least_privilege_login_without_pg_monitor(pg, login, databases, scratch, state_dir, restore):
    """Without pg_monitor the data directory is unknown: refused before the start unless it is given."""
    user = login(pg, monitor=False)
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    checks = Checks()
    label = label_for("c-nomonitor", pg)
    # The command method copies nothing even if the role went on with a wrong data directory ('/').
    run = role(pg, scratch, state_dir, exclusive_backup_label=label, exclusive_backup_login_user=user,
               exclusive_backup_method="command", exclusive_backup_command="exit 0",
               exclusive_backup_max_duration=600)
    print(f"\nMEASURED c pg{pg.major} least privilege without pg_monitor, no data directory: "
          f"run ended in {run.seconds:.1f} s, rc {run.rc}")
    with checks("refused before the start"):
        assert run.rc != 0, tail(run)
        assert "exclusive_backup_data_directory" in run.output, tail(run)
        assert not pg.in_backup()
        assert record(state_dir, label) is None, f"no backup may start, yet a state record says one did: {tail(run)}"
        backup_dir = scratch / "backups" / label
        left = sorted(p.name for p in backup_dir.iterdir()) if backup_dir.exists() else []
        assert not left, f"nothing may be written for a backup that never started: {left}"

    label = label_for("c-datadir", pg)
    run = role(pg, scratch, state_dir, exclusive_backup_label=label, exclusive_backup_login_user=user,
               exclusive_backup_data_directory=str(pg.data_dir), exclusive_backup_max_duration=600)
    print(f"MEASURED c pg{pg.major} least privilege without pg_monitor, data directory given: {run.seconds:.1f} s")
    backup_dir = scratch / "backups" / label
    with checks("with exclusive_backup_data_directory"):
        assert run.rc == 0, tail(run)
        assert read_record(backup_dir)["status"] == "complete"
    live.finish(expected_rows=BASE_ROWS, checks=checks)
    if not checks.failures:
        with checks("the backup restores"):
            assert_backup_layout(pg, backup_dir)
            restored, _seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
            assert restored.value("SELECT count(*) FROM t", dbname=dbname) == BASE_ROWS
    checks.done()


# -- d. the backup ends during the copy without this run's stop ---------------------------------------

def _wait_command(ready, go, seconds=90):
    """A copy command that says it runs (touches ``ready``) and waits for the test's ``go``."""
    return (f"touch {ready}; i=0; while [ ! -e {go} ] && [ $i -lt {seconds * 10} ]; do sleep 0.1; i=$((i+1)); done; "
            f"[ -e {go} ]")


def _end_by_restart(cluster):
    cluster.restart()


def _end_by_other_client(cluster):
    cluster.stop_backup()


def _end_by_crash(cluster):
    cluster.crash()
    cluster.start()


@pytest.mark.parametrize("how", [_end_by_restart, _end_by_other_client, _end_by_crash],
                         ids=["restart", "stopped-by-another-client", "crash"])
def test_backup_ended_during_the_copy_fails_the_run(pg, how, databases, scratch, state_dir, runs):
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    checks = Checks()
    label = label_for("d", pg)
    ready, go = scratch / "copy-running", scratch / "copy-go"
    run = runs(pg, exclusive_backup_label=label, exclusive_backup_method="command",
               exclusive_backup_command=_wait_command(ready, go), exclusive_backup_max_duration=600)
    wait_for(lambda: ready.exists() or run.proc.poll() is not None, 90)
    assert ready.exists(), run.output_so_far()[-4000:]
    rec = record(state_dir, label)
    assert rec is not None, f"the run's start left no state record for {label} in {state_dir}"
    assert pg.in_backup() and f"LABEL: {label}" in pg.backup_label()
    acted = time.monotonic()
    how(pg)
    go.touch()
    run.wait(120)
    print(f"\nMEASURED d pg{pg.major} {how.__name__}: run ended {time.monotonic() - acted:.1f} s after the action, "
          f"{run.seconds:.1f} s in all, rc {run.rc}")
    with checks("the run"):
        assert run.rc != 0, "a backup that ended without this run's stop must fail the run:\n" + run.output[-5000:]
        assert run.result and run.result["status"] == "failed", run.result
    with checks("backup.json"):
        saved = read_record(scratch / "backups" / label)
        assert saved["status"] == "failed", saved
        assert ENDED_WITHOUT_STOP.search(saved.get("error") or ""), saved
    with checks("the watchdog"):
        gone = wait_for(lambda: not watchdog_running(record(state_dir, label)), 15,
                        lambda: f"watchdog {rec.get('watchdog_pid')} still runs: {record(state_dir, label)}")
        print(f"MEASURED d pg{pg.major} {how.__name__}: watchdog gone {gone:.1f} s after the run")
    live.finish(expected_rows=BASE_ROWS, checks=checks)
    checks.done()


# -- e. labels with line separators and control characters --------------------------------------------

SEPARATORS = {
    "U+2028": "\u2028", "U+2029": "\u2029", "VT": "\x0b", "FF": "\x0c", "FS": "\x1c", "GS": "\x1d", "RS": "\x1e",
    "NEL": "\x85", "TAB": "\t",
}


def test_labels_with_separators_are_refused_and_start_nothing(api_pg, databases, scratch):
    """pg_start_backup itself (the role's label pattern refuses these already): a clear label error, no backup mode."""
    pg = api_pg
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    checks = Checks()
    tasks = []
    for name, char in SEPARATORS.items():
        tasks.append(task("pg_start_backup", label=f"pl-e-{name}-one{char}two", fast=True, max_duration=0,
                          state_dir=str(scratch / "state"), **connection(pg)))
        tasks.append(task("pg_backup_info", **connection(pg)))
    started = time.monotonic()
    results = run_tasks(tasks)
    print(f"\nMEASURED e pg{pg.major}: {len(SEPARATORS)} labels started and checked in "
          f"{time.monotonic() - started:.1f} s")
    for (name, _char), start, info in zip(SEPARATORS.items(), results[0::2], results[1::2]):
        with checks(f"label with {name}"):
            msg = start.get("msg", "")
            assert start.get("failed"), f"the start succeeded: {start.get('label')!r} {start.get('start_lsn')}"
            assert "label" in msg.lower() and "already in progress" not in msg, f"not a label error: {msg}"
            assert not start.get("changed"), start
            assert info.get("in_backup") is False, f"in backup mode afterwards: {info.get('backup')}"
    with checks("after all labels"):
        assert not pg.in_backup(), pg.backup_label()
    live.finish(expected_rows=BASE_ROWS, checks=checks)
    checks.done()


# -- f. a directory the copy cannot read ------------------------------------------------------------

def _copy_as_postgres(cluster, label, backup_root, methods):
    """pg_backup_copy as the postgres OS user (become su), one task per method, in one playbook run."""
    tasks = [{
        "pgexclusive.backup.pg_backup_copy": {
            "label": label, "data_directory": str(cluster.data_dir), "backup_dir": str(backup_root / method),
            "method": method, "parallel": 1,
        },
        "become": True, "become_user": OS_USER, "become_method": "ansible.builtin.su",
        "register": f"copy_{method}", "ignore_errors": True,
    } for method in methods]
    out = backup_root.parent / "copy-results.json"
    tasks.append({"ansible.builtin.copy": {
        "dest": str(out), "content": "{{ [%s] | to_json }}" % ", ".join(f"copy_{m}" for m in methods)}})
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             # The test's virtual environment is not readable by postgres; the copy needs no psycopg2.
             "vars": {"ansible_python_interpreter": "/usr/bin/python3"}, "tasks": tasks}]
    playbook = backup_root.parent / "copy-as-postgres.yml"
    playbook.write_text(json.dumps(play))
    run = run_playbook(playbook, "localhost,", run_dir(backup_root.parent), env=ansible_env(ANSIBLE_PIPELINING="1"),
                       timeout=300)
    assert out.exists(), run.output
    return dict(zip(methods, json.loads(out.read_text()))), run.output


def test_unreadable_directory_fails_the_copy_naming_it(one_pg, databases, scratch):
    """pg_backup_copy as the server's OS user (as `become_user: postgres` runs it) on a data directory
    holding a directory it cannot read: every method fails and names it."""
    pg = one_pg
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    checks = Checks()
    hidden = pg.data_dir / f"pgx_unreadable_{uuid.uuid4().hex[:6]}"
    hidden.mkdir()
    (hidden / "inside").write_text("cannot be read by postgres\n")
    hidden.chmod(0o000)
    backup_root = scratch / "as-postgres" / "backups"
    backup_root.mkdir(parents=True)
    chown_postgres(backup_root.parent)
    label = label_for("f", pg)
    methods = ["copy", "tar", "rsync"]
    pg.start_backup(label)
    try:
        started = time.monotonic()
        results, output = _copy_as_postgres(pg, label, backup_root, methods)
        print(f"\nMEASURED f pg{pg.major}: {len(methods)} copies as {OS_USER} in {time.monotonic() - started:.1f} s")
    finally:
        pg.stop_backup()
        hidden.chmod(0o700)
        shutil.rmtree(hidden)
    for method, result in results.items():
        msg = result.get("msg", "")
        if result.get("unreachable") or "privilege escalation" in msg or "su:" in msg or "password" in msg.lower():
            pytest.fail(f"the copy did not run as {OS_USER}: {result}\n{output[-3000:]}")
        with checks(f"method {method}"):
            made = backup_root / method
            if made.exists():
                assert made.stat().st_uid == pwd.getpwnam(OS_USER).pw_uid, f"{made} was not made by {OS_USER}"
            assert result.get("failed"), f"the copy succeeded without {hidden.name}: {result.get('warnings')}"
            assert hidden.name in msg, f"the failure does not name {hidden.name}: {msg}"
            assert not (made / "backup.json").exists(), "a backup.json was written"
    live.finish(expected_rows=BASE_ROWS, checks=checks)
    checks.done()


# -- g. a symbolic link swapped in during the copy ---------------------------------------------------

SECRET = "pgx-secret-" + uuid.uuid4().hex


@pytest.fixture
def secret_file(scratch):
    """A root-only file (directory 0700, file 0600, owned by root) holding SECRET."""
    where = scratch / "root-only"
    where.mkdir(mode=0o700)
    path = where / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    os.chown(where, 0, 0)
    os.chown(path, 0, 0)
    return path


def assert_untouched(secret):
    """The root-only file and its directory are still root's alone: nothing chowned or chmodded them."""
    for item, mode in ((secret.parent, 0o700), (secret, 0o600)):
        st = os.lstat(item)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, mode), \
            f"{item} was changed: uid {st.st_uid} gid {st.st_gid} mode {oct(st.st_mode)}"
    assert secret.read_text() == SECRET + "\n"


def _holds_secret(tree):
    """Files (not links) under ``tree`` holding SECRET (an uncompressed tar holding it too)."""
    found = []
    for root, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            try:
                with open(path, "rb") as handle:
                    if SECRET.encode() in handle.read():
                        found.append(path)
            except OSError:
                continue
    return found


class SwapAfterLook:
    """Swaps ``path`` for a link to ``target`` right after the copy first looks at it (lstat/stat)
    or, when it opens it without looking, right before the open: the window a real race has."""

    def __init__(self, path, target):
        self.path, self.target, self.fired = str(path), str(target), None

    def _mine(self, path, dir_fd=None):
        """Whether ``path`` (relative to ``dir_fd`` when given, as an fd-based walk opens it) is the file."""
        if isinstance(path, int):
            return False
        try:
            path = os.fsdecode(path)
            if dir_fd is not None and not os.path.isabs(path):
                path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            return os.path.abspath(path) == self.path
        except (TypeError, OSError):
            return False

    def swap(self, how):
        if self.fired is None:
            # Atomic, as a real attacker's rename(2) is: the name never stops existing.
            temporary = self.path + ".swap"
            os.symlink(self.target, temporary)
            os.rename(temporary, self.path)
            self.fired = how

    def install(self, monkeypatch):
        import builtins
        real_lstat, real_stat, real_open, real_os_open = os.lstat, os.stat, builtins.open, os.open
        real_copyfile = shutil.copyfile

        def lstat(path, *args, **kwargs):
            result = real_lstat(path, *args, **kwargs)
            if self._mine(path, kwargs.get("dir_fd")):
                self.swap("after lstat")
            return result

        def stat_(path, *args, **kwargs):
            result = real_stat(path, *args, **kwargs)
            if self._mine(path, kwargs.get("dir_fd")):
                self.swap("after stat")
            return result

        def open_(file, *args, **kwargs):
            if self._mine(file):
                self.swap("before open")
            return real_open(file, *args, **kwargs)

        def os_open(path, *args, **kwargs):
            if self._mine(path, kwargs.get("dir_fd")):
                self.swap("before os.open")
            return real_os_open(path, *args, **kwargs)

        def copyfile(src, dst, *args, **kwargs):
            if self._mine(src):
                self.swap("before copyfile")
            return real_copyfile(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "lstat", lstat)
        monkeypatch.setattr(os, "stat", stat_)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(shutil, "copyfile", copyfile)


def test_symlink_swapped_in_during_the_copy_never_copies_its_target(one_pg, databases, scratch, secret_file,
                                                                    monkeypatch):
    """The copy method, in process with a hook at the race's window: the data directory's regular
    file becomes a link to a root-only file between the copy's look at it and its read."""
    from ansible_collections.pgexclusive.backup.plugins.module_utils.copy.backup_copy import Copier
    from ansible_collections.pgexclusive.backup.plugins.module_utils.errors import BackupError

    pg = one_pg
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    checks = Checks()
    victim = pg.data_dir / f"pgx_swap_test_{uuid.uuid4().hex[:6]}"
    victim.write_text("original content\n")
    chown_postgres(victim)
    label = label_for("g-race", pg)
    backup_dir = scratch / "backups" / label
    hook = SwapAfterLook(victim, secret_file)
    pg.start_backup(label)
    error = None
    try:
        with monkeypatch.context() as patch:
            hook.install(patch)
            try:
                Copier(str(pg.data_dir), str(backup_dir), label, method="copy", parallel=1,
                       fix_label=pg.api == "extension").copy()
            except BackupError as exc:
                error = exc
    finally:
        pg.stop_backup()
        if os.path.lexists(victim):
            os.unlink(victim)
    print(f"\nMEASURED g pg{pg.major}: swap {hook.fired}; copy {'failed: %s' % error if error else 'succeeded'}")
    assert hook.fired, "the copy never looked at nor opened the file: the race was not exercised"
    with checks("the copy"):
        leaked = _holds_secret(backup_dir)
        assert not leaked, f"the copy followed the swapped-in link and holds the root-only file's content: {leaked}"
        copied = backup_dir / "data" / victim.name
        if error is None and os.path.lexists(copied):
            assert copied.is_symlink() or copied.read_text() == "original content\n", copied.read_text()[:200]
        if error is not None:
            assert victim.name in str(error), f"the failure does not name {victim.name}: {error}"
    with checks("the root-only file"):
        assert_untouched(secret_file)
    live.finish(expected_rows=BASE_ROWS, checks=checks)
    checks.done()


def test_link_to_a_root_only_file_is_kept_a_link_and_the_restore_check_changes_nothing_outside(
        one_pg, databases, scratch, state_dir, secret_file, restore):
    """The role with the copy method and verify_restore on a data directory holding a link to a root-only
    file: the backup holds the link (never the content), and the restore check chowns nothing outside its scratch."""
    pg = one_pg
    dbname = databases(pg)
    live = LiveCheck(pg, dbname)
    checks = Checks()
    link = pg.data_dir / f"pgx_link_{uuid.uuid4().hex[:6]}"
    os.symlink(secret_file, link)
    owner = os.stat(pg.data_dir)
    os.lchown(link, owner.st_uid, owner.st_gid)
    label = label_for("g-link", pg)
    try:
        run = role(pg, scratch, state_dir, exclusive_backup_label=label, exclusive_backup_method="copy",
                   exclusive_backup_verify_restore=True, exclusive_backup_include_wal=True,
                   exclusive_backup_wal_archive_dir=str(pg.archive_dir), exclusive_backup_max_duration=600)
    finally:
        os.unlink(link)
    print(f"\nMEASURED g pg{pg.major} link kept: role run {run.seconds:.1f} s, rc {run.rc}")
    backup_dir = scratch / "backups" / label
    saved = None
    with checks("the backup"):
        assert not _holds_secret(backup_dir), "the backup holds the root-only file's content"
        saved = read_record(backup_dir)
        copied = backup_dir / "data" / link.name
        if os.path.lexists(copied):
            assert copied.is_symlink() and os.readlink(copied) == str(secret_file), "the link is copied as a link"
        if run.rc == 0:
            assert saved["status"] == "complete", saved
        else:
            # Refusing to start a server on a copy that links out of its scratch is safe too, if it says why.
            assert saved["status"] == "failed" and link.name in (saved.get("error") or ""), saved
            print(f"MEASURED g pg{pg.major} link kept: the run failed: {saved['error'][:300]}")
    with checks("the root-only file"):
        assert_untouched(secret_file)
    live.finish(expected_rows=BASE_ROWS, checks=checks)
    if saved and saved["status"] == "complete" and not checks.failures:
        with checks("the backup restores"):
            assert_backup_layout(pg, backup_dir)
            restored, _seconds = restore_backup(pg, backup_dir, scratch / "restore", restore)
            assert restored.value("SELECT count(*) FROM t", dbname=dbname) == BASE_ROWS
    checks.done()
