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
