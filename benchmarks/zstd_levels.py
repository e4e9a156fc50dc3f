"""zstd levels and threads on incompressible data, outside Ansible: which setting keeps up with pg_basebackup.

    .venv/bin/python benchmarks/zstd_levels.py                 # 500 MiB of random bytes under /var/tmp
    .venv/bin/python benchmarks/zstd_levels.py --mib 200 --reps 3

The role's tar method compresses with the zstd CLI behind ``tar --zstd``
(level 3, one compression thread) or ``zstd -T<parallel>``;
``pg_basebackup -Z client-zstd`` compresses with libzstd's default level (3) in
its own process, without worker threads, while the server's walsender reads
the files. Random bytes are the worst case for both: nothing to gain, all the
cost of looking. Every setting compresses the same file from the page cache
into a file on the same disk (as the role writes its output), in turns within
each repetition; the table gives the median MiB/s of input and the output size.
The file and the outputs are removed at the end.
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
    ("-3 -T1 (tar --zstd today)", ["-3", "-T1"]),
    ("-3 -T2 (parallel 2 today)", ["-3", "-T2"]),
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
        for _ in range(mib):
            out.write(os.urandom(1024 * 1024))


def run(argv, stdin_path, stdout_path):
    with open(stdin_path, "rb") as src, open(stdout_path, "wb") as dst:
        started = time.monotonic()
        subprocess.run(argv, stdin=src, stdout=dst, check=True)
        return time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500, help="size of the random file")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every setting, interleaved")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pgx-zstd-", dir="/var/tmp"))
    try:
        source = work / "random.bin"
        make_random(source, args.mib)
        subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)   # into the page cache
        times = {name: [] for name, _ in SETTINGS}
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
        version = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
        print(f"{version}; {args.mib} MiB of random bytes, {os.cpu_count()} cores, median of {args.reps}, "
              f"1-min load at the end {os.getloadavg()[0]:.1f}\n")
        print("| zstd setting | median s | MiB/s | output / input |")
        print("| --- | ---: | ---: | ---: |")
        read = statistics.median(reads)
        print(f"| cat (copy, no compression) | {read:.2f} | {args.mib / read:.0f} | 1.000 |")
        for name, _ in SETTINGS:
            seconds = statistics.median(times[name])
            print(f"| {name} | {seconds:.2f} | {args.mib / seconds:.0f} | {sizes[name] / (args.mib << 20):.3f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
