import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.wal import arithmetic as wal

MB16 = 16 * 1024 * 1024


def test_lsn_round_trip():
    assert wal.parse_lsn("0/2000028") == 0x2000028
    assert wal.parse_lsn("1A/FF000000") == (0x1A << 32) | 0xFF000000


@pytest.mark.parametrize("text", ["", "0/", "x/1", "0/2000028 ", None])
def test_bad_lsn(text):
    with pytest.raises(ValueError):
        wal.parse_lsn(text)


def test_segment_of_names_the_file_holding_the_location():
    assert wal.segment_of(1, "0/2000028", MB16) == "000000010000000000000002"
    assert wal.segment_of(3, "1/FF000000", MB16) == "0000000300000001000000FF"


def test_last_segment_before_matches_pg_walfile_name_at_a_boundary():
    # pg_walfile_name('0/3000000') is ...02: nothing of segment 3 is needed.
    assert wal.last_segment_before(1, "0/3000000", MB16) == "000000010000000000000002"
    assert wal.last_segment_before(1, "0/3000001", MB16) == "000000010000000000000003"
    assert wal.last_segment_before(1, "1/0", MB16) == "0000000100000000000000FF"


def test_other_segment_sizes():
    size = 64 * 1024 * 1024
    assert wal.segment_of(1, "0/C000000", size) == "000000010000000000000003"
    assert wal.segment_of(1, "1/4000000", size) == "000000010000000100000001"


def test_backup_history_file():
    assert wal.backup_history_file("000000010000000000000002", "0/2000028", MB16) == \
        "000000010000000000000002.00000028.backup"


def test_infer_segment_size():
    assert wal.infer_segment_size("0/2000028", "000000010000000000000002") == MB16
    assert wal.infer_segment_size("0/C000028", "000000010000000000000003") == 64 * 1024 * 1024
    assert wal.infer_segment_size("0/2000028", "000000010000000000000009") is None
    assert wal.infer_segment_size("0/2000028", "garbage") is None


@pytest.mark.parametrize("last, needed, archived", [
    (None, "000000010000000000000002", False),
    ("000000010000000000000002", "000000010000000000000002", True),
    ("000000010000000000000003", "000000010000000000000002", True),
    ("000000010000000000000001", "000000010000000000000002", False),
    # The history file sorts after its segment and before the next one.
    ("000000010000000000000002", "000000010000000000000002.00000028.backup", False),
    ("000000010000000000000002.00000028.backup", "000000010000000000000002.00000028.backup", True),
    ("000000010000000000000003", "000000010000000000000002.00000028.backup", True),
    # Another timeline proves nothing.
    ("000000020000000000000009", "000000010000000000000002", False),
    ("00000002.history", "000000020000000000000002", False),
])
def test_archived_according_to(last, needed, archived):
    assert wal.archived_according_to(last, needed) is archived
