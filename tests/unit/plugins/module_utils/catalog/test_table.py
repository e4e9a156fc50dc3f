"""catalog/table.py: the readable table."""

import pytest

from ansible_collections.pgexclusive.backup.plugins.module_utils.catalog import table
from ansible_collections.pgexclusive.backup.tests.unit.plugins.module_utils.catalog.records import (
    BAD_DRILL, GOOD, rows_and_records)


@pytest.mark.parametrize("value, expected", [(None, "-"), (5, "5.0s"), (125, "2m05s"), (3720, "1h02m"),
                                             (200000, "2d07h")])
def test_seconds(value, expected):
    assert table.seconds(value) == expected


@pytest.mark.parametrize("value, expected", [(None, "-"), (512, "512 B"), (1536, "1.5 KiB"), (3 << 30, "3.0 GiB")])
def test_size(value, expected):
    assert table.size(value) == expected


def test_table_cuts_long_labels_and_keeps_columns_aligned():
    rows, _records = rows_and_records(("x" * 200, GOOD, {}), ("short", dict(GOOD, checks=[BAD_DRILL]), {}))
    lines = table.render_rows(rows)
    header, first, second = lines[0], lines[1], lines[2]
    assert len(first.split("  ")[1]) == table.MAX_CELL and first.split("  ")[1].endswith("~")
    assert header.index("STATUS") == first.index("complete") == second.index("complete")
    assert lines[3].startswith("      ! drill_failed: ")
