"""Installed in every Ray worker of tests/test_ray.py's session (Ray's `worker_process_setup_hook`), so a test can
kill a model actor at a known point instead of racing it with a clock.

With `$KOSMOS_TEST_RAY/pause-after` holding N, the first model actor to have answered N chunks writes its pid to
`$KOSMOS_TEST_RAY/paused` and sleeps in its next chunk until it is killed. Ray starts the actor again; that one (the
file `paused` exists) answers every chunk, the one it died in too.
"""

import os
import time


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
