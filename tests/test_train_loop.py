"""core/train/loop.py, the loop every trainer runs: cadence, stop, evaluation-pending resume, cut updates."""

import torch

from lmlab.core.signals import StopRequested
from lmlab.core.train.loop import TrainLoop


class Fake:
    """A trainer of `n` updates, evaluating every 3rd and saving every 2nd; it can be stopped inside update k
    (update returns False: cut short) or inside the measurement at update k."""

    def __init__(self, n=7, stop_in_update=None, stop_in_measure=None):
        self.step, self.n, self.events = 0, n, []
        self.stop_in_update, self.stop_in_measure = stop_in_update, stop_in_measure
        self.loop = TrainLoop(update=self.update, measure=self.measure, record=self.record, save=self.save,
                              finished=lambda: self.step >= self.n, eval_due=lambda: self.step % 3 == 0,
                              save_due=lambda: self.step % 2 == 0, step=lambda: self.step, device=torch.device("cpu"),
                              log=lambda msg: self.events.append(("log", msg)), last="last.pt")

    def signal(self):
        self.loop.stop.requested, self.loop.stop.signal_name = True, "SIGTERM"

    def update(self):
        if self.stop_in_update == self.step + 1:
            self.signal()
            return False
        self.step += 1
        self.events.append(("update", self.step))
        return True

    def measure(self):
        if self.stop_in_measure == self.step:
            self.signal()
        if self.loop.stop.requested:  # a trainer polls inside its validation
            raise StopRequested
        return self.step * 10

    def record(self, result):
        self.events.append(("eval", result))
        self.save(True)

    def save(self, is_best):
        self.events.append(("save", self.step, is_best, self.loop.eval_pending))

    def run(self):
        class Run:
            def release(self):
                pass

        class Reporter:
            def finish(self):
                pass
        with self.loop.stop_flag(Run(), Reporter()):
            return self.loop.run()


def _kinds(events):
    return [e for e in events if e[0] != "log"]


def test_cadence_evaluates_then_saves_and_otherwise_saves_on_its_interval():
    t = Fake()
    assert t.run() is None and t.step == 7
    assert _kinds(t.events) == [("update", 1), ("update", 2), ("save", 2, False, False), ("update", 3), ("eval", 30),
                                ("save", 3, True, False), ("update", 4), ("save", 4, False, False), ("update", 5),
                                ("update", 6), ("eval", 60), ("save", 6, True, False), ("update", 7)]


def test_a_stop_inside_validation_saves_it_pending_and_the_rerun_measures_it_first():
    t = Fake(stop_in_measure=3)
    assert t.run() == "SIGTERM" and t.step == 3
    assert _kinds(t.events)[-1] == ("save", 3, False, True)  # last.pt says: update 3's evaluation is pending
    assert ("eval", 30) not in t.events
    rerun = Fake()
    rerun.step, rerun.loop.eval_pending = 3, True  # what a trainer restores from that checkpoint
    assert rerun.run() is None
    assert _kinds(rerun.events)[:3] == [("eval", 30), ("save", 3, True, False), ("update", 4)]


def test_an_update_cut_short_skips_evaluation_and_the_stop_saves_the_state_before_it():
    t = Fake(stop_in_update=4)  # the stop lands inside update 4 (GEBM's energy phase): step stays 3
    assert t.run() == "SIGTERM" and t.step == 3
    events = _kinds(t.events)
    assert events[-1] == ("save", 3, False, False) and events.count(("eval", 30)) == 1
    assert any("SIGTERM: saved last.pt at update 3" in e[1] for e in t.events if e[0] == "log")


_AGREE = """
import json, os, signal, sys, time, torch, torch.distributed as dist
from lmlab.core.train.loop import TrainLoop
rank, store = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
loop = TrainLoop(update=None, measure=None, record=None, save=None, finished=None, eval_due=None, save_due=None,
                 step=lambda: 0, device=torch.device("cpu"), log=print, last="last.pt")
nothing = type("Nothing", (), {"finish": lambda self: None, "release": lambda self: None})()
with loop.stop_flag(nothing, nothing) as stop:
    before = loop.stop_requested()
    if rank == 1:  # SIGUSR1 has reached rank 1 only (srun signals each task on its own)
        os.kill(os.getpid(), signal.SIGUSR1)
    after = loop.stop_requested()
os.kill(os.getpid(), signal.SIGUSR1)  # torchrun's agent forwards its own copy late, after the rank has stopped
time.sleep(0.2)
print(json.dumps([before, after, stop.signal_name, loop._stopped()]))
dist.destroy_process_group()
"""


def test_a_rank_told_of_the_stop_by_another_names_that_ranks_signal_and_survives_a_late_copy(tmp_path):
    """Under torchrun a rank may learn of SLURM's SIGUSR1 from another rank before its own handler runs: it still
    logs 'SIGUSR1: saved ...' and reports stopped_by SIGUSR1 (the requeue logic and the summary read them). A copy of
    the signal that arrives once the rank has left the loop must not kill it before rank 0's checkpoint is written."""
    import json
    import subprocess
    import sys
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", _AGREE, str(rank), str(store)], stdout=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [json.loads(o.strip().splitlines()[-1]) for o in outs] == [[False, True, "SIGUSR1", "SIGUSR1"]] * 2
