"""`kosmos`, stopping for good after its N-th batch is written: what a kill or a signal at that moment does.

    KOSMOS_TEST_PAUSE_AFTER=2 KOSMOS_TEST_PAUSED=/tmp/flag python tests/pause_after.py ground PHOTOS --out r.jsonl

After the N-th batch is durable the process creates the file $KOSMOS_TEST_PAUSED and sleeps until it is killed
or signalled, so a test can stop it at a known point instead of racing it with a clock.
"""

import os
import time

from kosmos_cli.cli import main
from kosmos_cli.store import Output

after, flag = int(os.environ["KOSMOS_TEST_PAUSE_AFTER"]), os.environ["KOSMOS_TEST_PAUSED"]
write = Output.write
written = 0


def write_then_pause(self, records):
    global written
    kept = write(self, records)
    written += 1
    if written == after:
        with open(flag, "w"):
            pass
        time.sleep(3600)
    return kept


Output.write = write_then_pause
main()
