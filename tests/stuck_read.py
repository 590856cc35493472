"""`kosmos`, whose image reads of a FIFO block as a plain `open` does: a read that never returns (a hung mount).

    KOSMOS_TEST_STUCK=/tmp/flag python tests/stuck_read.py ground PHOTOS --out r.jsonl

kosmos opens images without blocking (inputs/images.py `open_regular`); this script swaps that for a plain `open`,
so a FIFO among the inputs holds its loader thread in `open` for good, and creates the file $KOSMOS_TEST_STUCK as it
starts to wait: what SIGTERM or Ctrl-C does to a run whose read is stuck, without racing a clock.
"""

import os
import stat

from kosmos_cli.cli import main
from kosmos_cli.inputs import images

flag, regular = os.environ["KOSMOS_TEST_STUCK"], images.open_regular


def blocking_open(path):
    if stat.S_ISFIFO(os.stat(path).st_mode):
        with open(flag, "w"):
            pass
        return open(path, "rb")  # no writer: waits for one forever
    return regular(path)


images.open_regular = blocking_open
main()
