"""The shared contracts (tests/contracts.py) cover every registered task and every kind of backbone."""

import os


def test_every_registered_task_and_backbone_kind_is_held_to_its_contract():
    """A new task's tests must call the shared task contract (tests/contracts.py) with its name."""
    import glob
    import re

    from toolkit import tasks

    here = os.path.dirname(os.path.abspath(__file__))
    source = "".join(open(f).read() for f in glob.glob(os.path.join(here, "test_*.py")))
    called = set(re.findall(r'run_(?:task|decoder)_contract\(\s*"(\w+)"', source))
    assert called == set(tasks.names()), sorted(set(tasks.names()) ^ called)
    assert source.count("run_backbone_contract(") >= 3  # vision, text and graph backbones
