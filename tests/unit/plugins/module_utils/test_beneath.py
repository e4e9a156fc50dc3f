"""beneath.py: a backup's files opened without following a link, and without blocking on a planted FIFO."""

import errno
import os

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.backup_order import copy_label_files
from ansible_collections.pgexclusive.backup.plugins.module_utils.beneath import (
    NotRegularFile, open_beneath, open_file_beneath)


@pytest.fixture
def top(tmp_path):
    (tmp_path / "top" / "data").mkdir(parents=True)
    (tmp_path / "top" / "data" / "backup_label").write_text("START WAL LOCATION: 0/2000028\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("not the backup's")
    return tmp_path / "top"


def read(fd):
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def test_a_regular_file_beneath_is_read(top):
    assert read(open_file_beneath(str(top), ["data", "backup_label"])).startswith(b"START WAL")


@pytest.mark.usefixtures("no_hang")
def test_a_fifo_is_refused_without_waiting_for_a_writer(top):
    os.mkfifo(str(top / "data" / "fifo"))
    with pytest.raises(NotRegularFile):
        open_file_beneath(str(top), ["data", "fifo"])


def test_a_directory_is_no_file(top):
    with pytest.raises(NotRegularFile):
        open_file_beneath(str(top), ["data"])


@pytest.mark.parametrize("where", ["last", "on the way"])
def test_a_link_is_not_followed(top, where):
    if where == "last":
        os.symlink(str(top.parent / "outside" / "secret"), str(top / "data" / "link"))
        names = ["data", "link"]
    else:
        os.symlink(str(top.parent / "outside"), str(top / "linked"))
        names = ["linked", "secret"]
    for opener in (open_beneath, open_file_beneath):
        with pytest.raises(OSError) as failed:
            opener(str(top), names)
        assert failed.value.errno in (errno.ELOOP, errno.ENOTDIR), failed.value


@pytest.mark.usefixtures("no_hang")
def test_a_fifo_as_the_copys_label_reads_as_no_label_and_does_not_hang(top):
    """Retention and the restore's proof read the copy's label files (backup_order.copy_label_files)."""
    (top / "backup.json").write_text("{}")
    os.unlink(str(top / "data" / "backup_label"))
    os.mkfifo(str(top / "data" / "backup_label"))
    assert copy_label_files(str(top)) == {}
