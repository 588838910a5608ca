"""Processes sharing a turn file take turns (bench.measure.turns): real processes, a real lock.

Each process holds the machine for a block of busy work, passes the turn, and logs when its
blocks start and end. With two processes, blocks must alternate and never overlap; alone, a
process must not wait for a partner that is not there.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT

# serial (tests/conftest.py): two processes take turns and their blocks' times are compared; a neighbour's work would distort it.
pytestmark = pytest.mark.serial

WORKER = """
import json, sys, time
sys.path.insert(0, {root!r})
from bench.measure.turns import Turns
time.sleep(max(0.0, {start} - time.time()))  # both processes imported: start together
spans = []
with Turns({turn!r}) as turns:
    for _ in range({blocks}):
        t0 = time.time()
        while time.time() - t0 < 0.05:  # a block of busy work, the machine held
            pass
        spans.append((t0, time.time()))
        turns.pass_turn()
print(json.dumps({{"spans": spans, "taken": turns.taken_by_others, "waited": turns.waited_s}}))
"""


def _start(turn, blocks=8, start=None):
    code = WORKER.format(root=str(ROOT), turn=str(turn), blocks=blocks, start=start or 0.0)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return json.loads(out)


def test_two_processes_alternate_blocks_and_never_overlap(tmp_path):
    turn = tmp_path / "ab.turn"
    start = time.time() + 5.0
    procs = [_start(turn, start=start), _start(turn, start=start)]
    a, b = (_result(p) for p in procs)
    spans = sorted([(s, e, "a") for s, e in a["spans"]] + [(s, e, "b") for s, e in b["spans"]])
    for (s1, e1, _), (s2, _, _) in zip(spans, spans[1:]):
        assert s2 >= e1 - 1e-3, "two processes held the machine at once"
    owners = [o for _, _, o in spans]
    switches = sum(1 for x, y in zip(owners, owners[1:]) if x != y)
    assert switches >= 12, owners  # 16 blocks: strict alternation is 15 switches
    assert a["taken"] >= 5 and b["taken"] >= 5, (a["taken"], b["taken"])


def test_a_process_alone_does_not_wait_for_a_partner(tmp_path):
    t0 = time.perf_counter()
    r = _result(_start(tmp_path / "alone.turn", blocks=10))
    assert r["taken"] == 0
    assert r["waited"] < 10 * 0.05 + 1.0, r  # at most ALONE_S per pass, plus scheduling slack
    assert time.perf_counter() - t0 < 60


def test_pinning_moves_every_thread_and_keeps_the_machine_thread_count():
    """Processes taking turns run on the same CPUs: ``pin_to_first_cpus`` pins every thread of
    the process, the compute pool an earlier point started included, and a later point's
    default thread count is still the machine's (not the pin's)."""
    import os

    import pytest

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least 2 CPUs to tell a pin from no pin")
    code = (
        "import os, sys, json, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from bench.measure.turns import pin_to_first_cpus\n"
        "from bench.measure.scenario import resolve_threads\n"
        "before = resolve_threads(None)\n"
        "torch.set_num_threads(before)\n"
        "torch.mm(torch.randn(512, 512), torch.randn(512, 512))  # starts the compute pool\n"
        "cpus = pin_to_first_cpus(1)\n"
        "torch.mm(torch.randn(512, 512), torch.randn(512, 512))\n"
        "tasks = {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir('/proc/self/task')}\n"
        "print(json.dumps({'before': before, 'after': resolve_threads(None), 'cpus': cpus, 'tasks': tasks}))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    first = min(os.sched_getaffinity(0))
    assert out["cpus"] == [first]
    assert len(out["tasks"]) >= 2, out  # the pool's threads exist, and they are pinned too
    assert all(v == [first] for v in out["tasks"].values()), out
    assert out["after"] == out["before"] == len(os.sched_getaffinity(0))


ARRIVER = """
import json, sys, time
sys.path.insert(0, {root!r})
from bench.measure.turns import arrive
t0 = time.time()
n = arrive({turn!r}, {parties}, timeout_s={timeout})
print(json.dumps({{"started": t0, "through": time.time(), "n": n}}))
"""


def _arriver(turn, parties, timeout=60.0):
    code = ARRIVER.format(root=str(ROOT), turn=str(turn), parties=parties, timeout=timeout)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_nobody_starts_before_the_partner_has_arrived(tmp_path):
    """``timing.turn_parties``: the process that comes first waits for the late one (its partner
    still starting up must not share the cores with its build and first blocks)."""
    turn = tmp_path / "ab.turn"
    early = _arriver(turn, 2)
    time.sleep(2.0)
    late = _arriver(turn, 2)
    a, b = _result(early), _result(late)
    assert a["n"] == b["n"] == 2
    assert a["through"] >= b["started"], "the early process went on before its partner arrived"
    assert a["through"] - a["started"] >= 1.5


def test_arrivals_of_finished_processes_do_not_count(tmp_path):
    """A turn file reused by the next pair (the loop in docs/compare-gate.md): last pair's pids are dead and are
    not partners; with nobody else there the process goes on after the timeout, saying so."""
    turn = tmp_path / "reused.turn"
    for _ in range(2):
        assert _result(_arriver(turn, 1))["n"] == 1
    t0 = time.perf_counter()
    p = _arriver(turn, 2, timeout=1.0)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert json.loads(out)["n"] == 1  # the two earlier pids are in the file, but dead
    assert "only 1 of timing.turn_parties=2" in err
    assert 1.0 <= time.perf_counter() - t0 < 30
    assert len((tmp_path / "reused.turn.arrivals").read_text().splitlines()) == 1  # dead ones pruned


def test_a_timed_loop_stops_when_its_partner_has_finished(tmp_path):
    """A real partner process takes turns for 12 blocks and exits; this process's timed loop,
    whose target cannot be reached, stops at its next pass that nobody takes, with
    ``partner_left``, instead of timing on alone to its 30 s budget (iterations the partner no
    longer shares)."""
    from bench.measure.timer import StageTimer, StopRule
    from bench.measure.turns import Turns

    turn = tmp_path / "pl.turn"
    partner = _start(turn, blocks=12, start=time.time() + 3.0)
    time.sleep(3.0)

    def step(t):
        with t.stage("x"):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.01:
                pass

    rule = StopRule(warmup=1, warmup_seconds=0.0, stable_window=1, min_seconds=0.0, min_repeats=5,
                    max_seconds=30.0, target=1e-9, target_stage="x", turn_seconds=0.05, turn_blocks=6)
    t0 = time.perf_counter()
    with Turns(str(turn)) as turns:
        res = StageTimer("cpu").run(step, rule, pass_turn=turns.pass_turn)
    wall = time.perf_counter() - t0
    assert _result(partner)["taken"] >= 3  # it did take turns with us
    assert res.stop_reason == "partner_left", res.stop_reason
    assert turns.taken_by_others >= 3 and wall < 15, (turns.taken_by_others, wall)
