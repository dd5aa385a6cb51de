"""The seconds each test file took in one measured run of the suite, for conftest's file order.

    python -m pytest -n 2 --dist loadfile --junitxml=/tmp/suite.xml   # or `make test` with it
    python tests/file_seconds.py /tmp/suite.xml                        # rewrites tests/file_seconds.json

The workers take whole files (--dist loadfile); conftest hands them out longest first by these
figures. Only the order matters, so a table from another CPU still orders well; refresh it when a
file's share of the suite changes a lot."""

import collections
import json
import os
import sys
import xml.etree.ElementTree as ElementTree

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "file_seconds.json")


def file_seconds(junit_xml):
    """{test file name: seconds of its tests (setup, call and teardown, pytest's junit `time`)}."""
    seconds = collections.Counter()
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")  # tests.test_x[.TestClass]
        name = next((part for part in parts if part.startswith("test_")), parts[-1]) + ".py"
        seconds[name] += float(case.get("time", 0))
    return {name: round(s, 1) for name, s in seconds.most_common()}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/file_seconds.py JUNIT_XML")
    table = file_seconds(sys.argv[1])
    with open(TABLE, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"{len(table)} files, {sum(table.values()):.0f} s, written to {TABLE}")
