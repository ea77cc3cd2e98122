"""Remove regular files older than N days below ROOT, staying on ROOT's filesystem.

usage: remove_old_files.py ROOT DAYS
Symbolic links are removed as links, never followed; every removal is printed.
"""

import os
import sys
import time


def main() -> int:
    root, days = sys.argv[1], int(sys.argv[2])
    cutoff = time.time() - days * 86400
    device = os.lstat(root).st_dev
    removed = freed = failed = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == device]
        for name in files:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
                if info.st_mtime >= cutoff:
                    continue
                os.unlink(path)
            except OSError as exc:
                failed += 1
                print(f"kept {path}: {exc.strerror}", file=sys.stderr)
                continue
            removed += 1
            freed += info.st_size
            print(f"removed {path}")
    print(f"{removed} files removed, {freed} bytes freed, {failed} could not be removed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
