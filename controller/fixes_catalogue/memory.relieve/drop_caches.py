"""Flush dirty pages, then drop the page cache, dentries and inodes (writes 3)."""

import os
import sys


def main() -> int:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError as exc:
        print(f"cannot drop caches: {exc.strerror}", file=sys.stderr)
        return 1
    print("caches dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
