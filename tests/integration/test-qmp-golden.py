"""Golden QMP scenarios: each tests/integration/qmp/NAME.qmp is sent to a
fresh blockd one request at a time; the replies and events, with
timestamps replaced by a fixed value, must equal NAME.out exactly.  Run
with BLOCKD_GOLDEN_UPDATE=1 to rewrite the .out files after a deliberate
change (and review the diff)."""
import glob
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = sorted(glob.glob(os.path.join(HERE, "qmp", "*.qmp")))


def filtered(obj):
    if "timestamp" in obj:
        obj = dict(obj, timestamp={"seconds": "SECS",
                                   "microseconds": "USECS"})
    return json.dumps(obj)


@pytest.mark.parametrize("path", SCENARIOS,
                         ids=[os.path.basename(p) for p in SCENARIOS])
def test_scenario(blockd_factory, path):
    d = blockd_factory()
    q = d.qmp(negotiate=False)
    out = []
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append("-> " + line)
        reply = q.execute(line)
        for ev in q.events:
            out.append("<- " + filtered(ev))
        q.events.clear()
        out.append("<- " + filtered(reply))
    text = "\n".join(out) + "\n"
    golden = path[:-4] + ".out"
    if os.environ.get("BLOCKD_GOLDEN_UPDATE"):
        with open(golden, "w") as f:
            f.write(text)
    with open(golden) as f:
        assert text == f.read()
    assert d.proc.wait(10) == 0
