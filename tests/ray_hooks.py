"""Installed in every Ray worker of tests/test_ray.py's session (Ray's `worker_process_setup_hook`), so a test can
kill a model actor at a known point instead of racing it with a clock.

With `$KOSMOS_TEST_RAY/pause-after` holding N, the first model actor to have answered N chunks writes its pid to
`$KOSMOS_TEST_RAY/paused` and sleeps in its next chunk until it is killed. Ray starts the actor again; that one (the
file `paused` exists) answers every chunk, the one it died in too.
"""

import json
import os
import threading
import time
from dataclasses import replace

from kosmos_cli.tasks.scores import Generation


def install() -> None:
    from kosmos_cli.run import ray as on_ray

    folder = os.environ["KOSMOS_TEST_RAY"]
    answer = on_ray.ModelActor.answer
    answered = [0]

    def pausing(self, chunk, work):
        trigger, paused = os.path.join(folder, "pause-after"), os.path.join(folder, "paused")
        if os.path.exists(trigger) and not os.path.exists(paused):
            with open(trigger) as f:
                after = int(f.read())
            if answered[0] >= after:
                with open(paused + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(paused + ".tmp", paused)
                time.sleep(3600)
            answered[0] += 1
        return answer(self, chunk, work)

    on_ray.ModelActor.answer = pausing


class StandIn:
    """A model actor that answers at once (put in place of run/ray.py's ModelActor by a test): every unit's record as
    it came, answered "a stand-in". Each call sleeps 0.05 s, so calls sent together overlap, and writes what it saw
    to `$KOSMOS_TEST_RAY/stand-in.json`: the most calls it ran at once and the units of each call."""

    def __init__(self, model, generation, loaders):
        self.lock, self.running, self.most, self.sizes = threading.Lock(), 0, 0, []

    def ready(self):
        return None, 0

    def answer(self, chunk, work):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.sizes.append(sum(len(units) for _, units in chunk))
        time.sleep(0.05)
        task, _ = work
        stand_in = Generation("a stand-in")
        records = [task.record(replace(unit, generated=stand_in)) for _, units in chunk for unit in units]
        with self.lock:
            self.running -= 1
            with open(os.path.join(os.environ["KOSMOS_TEST_RAY"], "stand-in.json"), "w") as f:
                json.dump({"most": self.most, "sizes": self.sizes}, f)
        return records
