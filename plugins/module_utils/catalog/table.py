# -*- coding: utf-8 -*-
# Copyright: pgexclusive.backup maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The catalog as a fixed-width text table, one list entry a line, for ``debug: var=catalog.table``.

Everything shown comes from dest, which anyone who writes it controls: control
and line-separator characters are shown escaped, so a label cannot start a line
of its own, move the cursor or colour a terminal.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import unicodedata

# Past this a cell is cut (and ends in '~'): a 1024-byte label would push every other column off the screen.
MAX_CELL = 48
HEADERS = ("LABEL", "STATUS", "METHOD", "START (UTC)", "IN BACKUP", "COPY", "SIZE", "WAL (TIMELINE)", "DRILL",
           "RESTORABLE")


def shown(value):
    """``value`` as text with every control, format or line-separator character escaped."""
    text = "-" if value is None else str(value)
    out = []
    for char in text:
        if unicodedata.category(char)[0] == "C" or char in u"\u2028\u2029":
            code = ord(char)
            out.append("\\x%02x" % code if code < 0x100 else "\\u%04x" % code if code < 0x10000 else "\\U%08x" % code)
        else:
            out.append(char)
    return "".join(out)


def seconds(value):
    """12.3 -> '12.3s', 3720 -> '1h02m', 200000 -> '2d07h'."""
    if value is None:
        return "-"
    value = float(value)
    if value < 60:
        return "%.1fs" % value
    minutes = int(value // 60)
    if minutes < 60:
        return "%dm%02ds" % (minutes, int(value % 60))
    hours = minutes // 60
    return "%dh%02dm" % (hours, minutes % 60) if hours < 48 else "%dd%02dh" % (hours // 24, hours % 24)


def size(value):
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (value, unit)
        value /= 1024
    return None


def wal_range(row):
    start, stop = row.get("start_wal_file"), row.get("stop_wal_file")
    if not start:
        return "-"
    text = "%s..%s" % (start, (stop or "?")[-8:])
    if row.get("timeline") is not None:
        text += " (%s)" % row["timeline"]
    return text + (" +wal" if row.get("wal_included") else "")


def drill(row):
    found = row.get("drill")
    if not found:
        return "never" if row.get("status") else "-"
    verdict = "ok" if found["ok"] else "failed" if found["check_ran"] else "not run"
    return "%s %s" % (verdict, (found.get("time") or "")[:10])


def cells(row):
    start = row.get("start_time")
    return (row["label"], row.get("status") or "-", row.get("method") or "-",
            start[:19] if isinstance(start, str) else "-", seconds(row.get("duration")),
            seconds(row.get("copy_duration")), size(row.get("bytes")), wal_range(row), drill(row),
            "yes" if row["restorable"] else "NO")


def _cut(text, width):
    return text if len(text) <= width else text[:width - 1] + "~"


def render_rows(rows):
    """The header and one line per row, each column as wide as its widest cell (at most MAX_CELL), with the
    problems of each row below it."""
    table = [tuple(shown(c) for c in cells(r)) for r in rows]
    widths = [min(MAX_CELL, max(len(line[i]) for line in table + [HEADERS])) for i in range(len(HEADERS))]

    def line(values):
        return "  " + "  ".join(_cut(v, w).ljust(w) for v, w in zip(values, widths)).rstrip()

    lines = [line(HEADERS)]
    for r, values in zip(rows, table):
        lines.append(line(values))
        for found in r["problems"]:
            lines.append("      ! %s: %s What to do: %s" % (found["kind"], shown(found["message"]), shown(found["hint"])))
    return lines


def render(dest, clusters, rows, summary):
    """The whole table: a title, then per cluster where it stands and its backups, newest first."""
    by_label = dict((r["label"], r) for r in rows)
    lines = ["Backups in %s: %d, %d restorable, %d not (checked %s)" % (
        shown(dest), summary["backups"], summary["restorable"], summary["unrestorable"], summary["checked_at"])]
    for cluster in clusters:
        lines.append("")
        if cluster["system_identifier"] is None:
            lines.append("No cluster named (no readable backup.json, or one that names none)")
        else:
            lines.append("Cluster %s  host %s  data directory %s" % tuple(
                shown(cluster[k]) for k in ("system_identifier", "host", "data_directory")))
            lines.append("  newest restorable: %s" % _newest(cluster, "newest_restorable", "stopped",
                                                             "newest_restorable_stop_time", "newest_restorable_age"))
            lines.append("  newest verified restore: %s" % _newest(cluster, "newest_verified", "drilled",
                                                                   "newest_verified_at", "newest_verified_age"))
        lines.extend(render_rows([by_label[label] for label in cluster["backups"]]))
    return lines


def _newest(cluster, label, verb, when, age):
    if not cluster[label]:
        return "none"
    return "%s (%s %s, %s ago)" % (shown(cluster[label]), verb, shown(cluster[when]), seconds(cluster[age]))
