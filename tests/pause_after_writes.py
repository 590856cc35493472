"""`kosmos`, stopping for good once its N-th batch of records is written: what a kill at that moment does to a run
whose model is elsewhere (--on ray), where tests/pause_after.py's pause before the model never comes.

    KOSMOS_TEST_PAUSE_AFTER=2 KOSMOS_TEST_PAUSED=/tmp/flag python tests/pause_after_writes.py ground PHOTOS --on ray

After the N-th batch is durable the writing thread creates $KOSMOS_TEST_PAUSED and sleeps until the process is
killed: the output then holds exactly N batches, whatever the cluster is doing.
"""

import os
import time

from kosmos_cli.cli import main
from kosmos_cli.output.store import Output

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
