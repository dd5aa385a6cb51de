"""benchmarks/RESULTS.md holds one section per benchmark script, each replaced whole by its script."""

import os
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun that script to refresh it.\n"


def update_section(name, body):
    text = open(RESULTS).read() if os.path.exists(RESULTS) else HEADER
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    section = f"{begin}\n{body.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with open(RESULTS + ".tmp", "w") as f:
        f.write(text)
    os.replace(RESULTS + ".tmp", RESULTS)
