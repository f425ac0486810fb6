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
file path), `url` (http or https) or `text` (the content itself), and optionally `title`,
`description`, `tags`, `content_type`, `filename` and `stamp` (an item whose stamp did not change
is not read again). Items missing from a complete listing are deleted (unless the source says
`on_remove = "keep"`). Anything on stderr goes to the node's log. Exit non-zero when the listing
is incomplete: nothing is deleted then.
"""

import json
import os
import sys


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: reachback-exec.py FOLDER", file=sys.stderr)
        return 2
    folder = os.path.abspath(sys.argv[1])
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".csv"))
    except OSError as e:
        print(f"cannot list {folder}: {e}", file=sys.stderr)
        return 1
    total_rows = 0
    for name in names:
        path = os.path.join(folder, name)
        st = os.stat(path)
        with open(path, "rb") as f:
            rows = sum(1 for _ in f)
        total_rows += rows
        station = name[: -len(".csv")]
        print(json.dumps({
            "key": f"readings/{name}",
            "title": f"Readings of {station}",
            "description": f"{rows} rows",
            "tags": [station],
            "content_type": "text/csv",
            "path": path,
            "stamp": f"{st.st_size}:{st.st_mtime_ns}",
        }))
    print(json.dumps({
        "key": "summary",
        "title": "Stations summary",
        "content_type": "text/plain",
        "filename": "summary.txt",
        "text": f"{len(names)} stations, {total_rows} rows\n",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
