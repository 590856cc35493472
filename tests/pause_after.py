"""`kosmos`, stopping for good after its N-th batch is written: what a kill or a signal at that moment does.

    KOSMOS_TEST_PAUSE_AFTER=2 KOSMOS_TEST_PAUSED=/tmp/flag python tests/pause_after.py ground PHOTOS --out r.jsonl

Batches are written on a thread behind the model's (pipeline.FINISH_AHEAD). Before the model takes batch N+1, the
process waits until the N-th batch is durable, creates the file $KOSMOS_TEST_PAUSED, and sleeps on the model's thread
until it is killed or signalled: nothing else is in flight then, so a test can stop it at a known point instead of
racing it with a clock.
"""

import os
import threading
import time

from kosmos_cli.cli import main
from kosmos_cli.output.store import Output
from kosmos_cli.run import batching

after, flag = int(os.environ["KOSMOS_TEST_PAUSE_AFTER"]), os.environ["KOSMOS_TEST_PAUSED"]
write, forward = Output.write, batching._forward
written, forwarded = 0, 0
durable = threading.Event()


def write_then_tell(self, records):
    global written
    kept = write(self, records)
    written += 1
    if written == after:
        durable.set()
    return kept


def pause_before_the_next(*args, **kwargs):
    global forwarded
    forwarded += 1
    if forwarded == after + 1:
        durable.wait()
        with open(flag, "w"):
            pass
        time.sleep(3600)
    return forward(*args, **kwargs)


Output.write = write_then_tell
batching._forward = pause_before_the_next
main()
