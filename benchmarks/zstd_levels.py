"""zstd levels and threads on incompressible data, outside Ansible: which setting keeps up with pg_basebackup.

    .venv/bin/python benchmarks/zstd_levels.py                 # 500 MiB of random bytes under /var/tmp
    .venv/bin/python benchmarks/zstd_levels.py --mib 200 --reps 3
    .venv/bin/python benchmarks/zstd_levels.py --clusters  # also side by side with pg_basebackup (root)

The role's tar method compresses with the zstd CLI behind ``tar --zstd``
(level 3, one compression thread) or ``zstd -T<parallel>``;
``pg_basebackup -Z client-zstd`` compresses with libzstd's default level (3) in
its own process, without worker threads, while the server's walsender reads
the files. Random bytes are the worst case for both: nothing to gain, all the
cost of looking. Every setting compresses the same file from the page cache
into a file on the same disk (as the role writes its output), in turns within
each repetition; the table gives the median MiB/s of input and the output size.
The file and the outputs are removed at the end.

``--clusters`` also builds two PostgreSQL 15 clusters of about ``--mib`` each
with the test bed (one of random bytea rows, one by ``pgbench -i``) and runs,
side by side on each, ``pg_basebackup -Ft -Z client-zstd`` (level 3, no
workers) and GNU tar of the files a backup copies piped into each zstd
setting, as the role's tar method runs it (without Ansible and the module
around it); the clusters are removed at the end.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (name, zstd arguments). --single-thread is what pg_basebackup's client zstd does: compress and write in
# one thread; the CLI's default (-T1) already overlaps I/O with one compression thread.
SETTINGS = [
    ("-3 --single-thread (libzstd default, as pg_basebackup)", ["-3", "--single-thread"]),
    ("no options (what tar --zstd runs today)", []),
    ("-3 -T1", ["-3", "-T1"]),
    ("-3 -T2 (parallel 2 today: tar --use-compress-program='zstd -T2')", ["-T2"]),
    ("-3 -T0", ["-3", "-T0"]),
    ("-1 -T1", ["-1", "-T1"]),
    ("-1 -T2", ["-1", "-T2"]),
    ("-1 -T0", ["-1", "-T0"]),
    ("--fast=1 -T1", ["--fast=1", "-T1"]),
    ("--fast=1 -T2", ["--fast=1", "-T2"]),
    ("--fast=3 -T2", ["--fast=3", "-T2"]),
]


def make_random(path, mib):
    with open(path, "wb") as out:
        for _mib in range(mib):
            out.write(os.urandom(1024 * 1024))


# The subset compared with pg_basebackup on clusters: today's two, and the candidates.
CLUSTER_SETTINGS = [
    ("tar --zstd (today)", []),
    ("zstd -3 --single-thread", ["-3", "--single-thread"]),
    ("zstd -T2 (parallel 2 today)", ["-T2"]),
    ("zstd -1 -T1", ["-1", "-T1"]),
    ("zstd -1 -T2", ["-1", "-T2"]),
    ("zstd --fast=1 -T1", ["--fast=1", "-T1"]),
    ("zstd --fast=1 -T2", ["--fast=1", "-T2"]),
]


def clusters(work, mib, reps):
    """pg_basebackup client zstd against tar | zstd <setting> on a random and a pgbench cluster: a table."""
    from run import MAJOR, data_bytes, fill_pgbench, fill_random, settle
    from testbed import Cluster, provide, stop_all

    inst = provide(MAJOR)
    built = {}
    try:
        built["random"] = Cluster.create(inst, work / "random")
        fill_random(built["random"], mib << 20)
        built["pgbench"] = Cluster.create(inst, work / "pgbench")
        # pgbench -i: about 15 MiB of data directory per scale unit.
        fill_pgbench(built["pgbench"], max(1, mib // 15))
        times, sizes = {}, {}
        for rep in range(reps):
            for name, cluster in built.items():
                settle(cluster)
                out = work / "out"
                key = (name, "pg_basebackup -Ft -Z client-zstd")
                started = time.monotonic()
                subprocess.run([str(cluster.inst.tool("pg_basebackup")), "-h", str(cluster.socket_dir), "-p",
                                str(cluster.port), "-U", "postgres", "-D", str(out), "-c", "fast", "--no-sync",
                                "-Ft", "-Z", "client-zstd"], check=True, capture_output=True)
                times.setdefault(key, []).append(time.monotonic() - started)
                sizes[key] = sum(f.stat().st_size for f in out.iterdir())
                shutil.rmtree(out)
                for label, extra in CLUSTER_SETTINGS:
                    settle(cluster)
                    key = (name, label)
                    target = work / "base.tar.zst"
                    started = time.monotonic()
                    compress = ["--use-compress-program=zstd " + " ".join(extra)] if extra else ["--zstd"]
                    proc = subprocess.run(["tar", "-C", str(cluster.data_dir), "-cf", str(target), *compress,
                                           "--anchored",
                                           "--exclude=./pg_wal/*", "."], capture_output=True, check=False)
                    times.setdefault(key, []).append(time.monotonic() - started)
                    if proc.returncode not in (0, 1):
                        raise SystemExit(proc.stderr.decode())
                    sizes[key] = target.stat().st_size
                    target.unlink()
            print(f"clusters: repetition {rep + 1}/{reps} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr,
                  flush=True)
        lines = ["", f"Clusters: {', '.join(f'{n} {data_bytes(c) / 1048576:.0f} MiB' for n, c in built.items())} "
                 "(the files a backup copies), PostgreSQL 15, test bed settings; median of "
                 f"{reps}, 1-min load at the end {os.getloadavg()[0]:.1f}", "",
                 "| cluster | variant | median s | × pg_basebackup client zstd | output MiB |",
                 "| --- | --- | ---: | ---: | ---: |"]
        for name in built:
            base = statistics.median(times[(name, "pg_basebackup -Ft -Z client-zstd")])
            for (cluster_name, label), values in times.items():
                if cluster_name == name:
                    seconds = statistics.median(values)
                    lines.append(f"| {name} | {label} | {seconds:.2f} | {seconds / base:.2f} | "
                                 f"{sizes[(name, label)] / 1048576:.0f} |")
        return "\n".join(lines)
    finally:
        for cluster in built.values():
            cluster.stop()
        stop_all()


def run(argv, stdin_path, stdout_path):
    with open(stdin_path, "rb") as src, open(stdout_path, "wb") as dst:
        started = time.monotonic()
        subprocess.run(argv, stdin=src, stdout=dst, check=True)
        return time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500, help="size of the random file")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every setting, interleaved")
    parser.add_argument("--clusters", action="store_true",
                        help="also side by side with pg_basebackup -Z client-zstd on PostgreSQL 15 clusters (root)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pgx-zstd-", dir="/var/tmp"))
    try:
        source = work / "random.bin"
        make_random(source, args.mib)
        subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)   # into the page cache
        times = {name: [] for name, _argv in SETTINGS}
        sizes = {}
        reads = []
        for rep in range(args.reps):
            reads.append(run(["cat"], source, work / "plain"))
            for name, extra in SETTINGS:
                out = work / "out.zst"
                times[name].append(run(["zstd", "-q", "-c", *extra], source, out))
                sizes[name] = out.stat().st_size
                out.unlink()
            print(f"repetition {rep + 1}/{args.reps} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr,
                  flush=True)
        version = subprocess.run(["zstd", "--version"], capture_output=True, text=True, check=False).stdout.strip()
        print(f"{version}; {args.mib} MiB of random bytes, {os.cpu_count()} cores, median of {args.reps}, "
              f"1-min load at the end {os.getloadavg()[0]:.1f}\n")
        print("| zstd setting | median s | MiB/s | output / input |")
        print("| --- | ---: | ---: | ---: |")
        read = statistics.median(reads)
        print(f"| cat (copy, no compression) | {read:.2f} | {args.mib / read:.0f} | 1.000 |")
        for name, _argv in SETTINGS:
            seconds = statistics.median(times[name])
            print(f"| {name} | {seconds:.2f} | {args.mib / seconds:.0f} | {sizes[name] / (args.mib << 20):.3f} |")
        source.unlink()
        if args.clusters:
            print(clusters(work, args.mib, args.reps))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
