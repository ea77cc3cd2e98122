"""Rotate one log file: LOG -> LOG.1.gz (shifting older copies), then truncate LOG in place.

usage: rotate_log.py LOG KEEP
"""

import gzip
import os
import shutil
import stat
import sys


def main() -> int:
    log, keep = sys.argv[1], int(sys.argv[2])
    info = os.lstat(log)
    if not stat.S_ISREG(info.st_mode):
        print(f"{log} is not a regular file", file=sys.stderr)
        return 2
    oldest = f"{log}.{keep}.gz"
    if os.path.exists(oldest):
        os.unlink(oldest)
        print(f"removed {oldest}")
    for n in range(keep - 1, 0, -1):
        older = f"{log}.{n}.gz"
        if os.path.exists(older):
            os.replace(older, f"{log}.{n + 1}.gz")
    target = f"{log}.1.gz"
    with open(log, "rb") as source, gzip.open(target + ".part", "wb") as sink:
        shutil.copyfileobj(source, sink)
    os.chmod(target + ".part", stat.S_IMODE(info.st_mode))
    os.replace(target + ".part", target)
    # truncate in place: the writer keeps its open file and carries on
    with open(log, "r+b") as handle:
        handle.truncate(0)
    print(f"rotated {log} ({info.st_size} bytes) into {target}; kept {keep} copies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
