#!/usr/bin/env python3
"""Example reachback plug-in for a docfed `exec` source (ARCHITECTURE.md §2.9).

It publishes every CSV file of a station's export folder, and a daily summary written by the
plug-in itself. Configure it on the primaries' topology:

    [[source]]
    name = "stations"
    kind = "exec"
    command = ["/usr/bin/python3", "/opt/docfed/reachback-exec.py", "/srv/stations"]
    interval = "60s"
    tags = ["stations"]

The protocol: print one JSON object per item on stdout and exit 0 when the listing is complete.
Each object has a `key` (the same key is the same document), exactly one of `path` (an absolute
file path with no symbolic link on the way: the node follows none), `url` (http or https) or
`text` (the content itself), and optionally `title`, `description`, `tags`, `content_type`,
`filename` and `stamp` (an item whose stamp did not change is not read again). Items missing from a complete listing are deleted (unless the source says
`on_remove = "keep"`). Anything on stderr goes to the node's log. Exit non-zero when the listing
is incomplete: nothing is deleted then.
"""

import errno
import json
import os
import stat
import sys


def open_reading(folder_fd: int, name: str):
    """Opens a file of the folder without following a link (whoever may write into the folder
    could otherwise point one at any file this program or the node can read), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=folder_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            print(f"{name}: a symbolic link, not followed; skipped", file=sys.stderr)
        elif e.errno != errno.ENOENT:
            print(f"{name}: {e}", file=sys.stderr)
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        print(f"{name}: not a regular file; skipped", file=sys.stderr)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: reachback-exec.py FOLDER", file=sys.stderr)
        return 2
    # The node opens each printed path with no symbolic link on the way: the folder as it
    # really is, resolved once here.
    folder = os.path.realpath(sys.argv[1])
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        names = sorted(n for n in os.listdir(folder_fd) if n.endswith(".csv"))
    except OSError as e:
        print(f"cannot list {folder}: {e}", file=sys.stderr)
        return 1
    total_rows = 0
    stations = 0
    for name in names:
        opened = open_reading(folder_fd, name)
        if opened is None:
            continue
        f, st = opened
        with f:
            rows = sum(1 for _ in f)
        total_rows += rows
        stations += 1
        station = name[: -len(".csv")]
        print(json.dumps({
            "key": f"readings/{name}",
            "title": f"Readings of {station}",
            "description": f"{rows} rows",
            "tags": [station],
            "content_type": "text/csv",
            "path": os.path.join(folder, name),
            "stamp": f"{st.st_size}:{st.st_mtime_ns}",
        }))
    print(json.dumps({
        "key": "summary",
        "title": "Stations summary",
        "content_type": "text/plain",
        "filename": "summary.txt",
        "text": f"{stations} stations, {total_rows} rows\n",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
