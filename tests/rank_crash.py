"""`kosmos`, with one rank of a multi-process run dying hard (what a segfault or the OOM killer does) or hanging
(what a stuck GPU or file system does).

    torchrun --nproc_per_node 2 tests/rank_crash.py ground PHOTOS --out r.jsonl ...

The rank named by $KOSMOS_TEST_CRASH_RANK ends with os._exit after its first batch is computed, before that
batch is sent to rank 0 and written: no message, no cleanup. The rank named by $KOSMOS_TEST_HANG_RANK stops there
instead, alive: its process goes on, its work does not. The rank named by $KOSMOS_TEST_SLOW_LOAD_RANK takes 10 more
seconds to load its model.
"""

import os
import time

from kosmos_cli.cli import main
from kosmos_cli.model.engine import Engine
from kosmos_cli.run import batching


def _after_first_batch(then):
    forward = batching._forward

    def _forward_then(*args, **kwargs):
        forward(*args, **kwargs)
        then()

    batching._forward = _forward_then


if os.environ.get("RANK") == os.environ.get("KOSMOS_TEST_CRASH_RANK", "-"):
    _after_first_batch(lambda: os._exit(3))
if os.environ.get("RANK") == os.environ.get("KOSMOS_TEST_HANG_RANK", "-"):
    _after_first_batch(lambda: time.sleep(3600))
if os.environ.get("RANK") == os.environ.get("KOSMOS_TEST_SLOW_LOAD_RANK", "-"):
    load = Engine.load

    def _slow_load(self, *args, **kwargs):
        time.sleep(10)
        return load(self, *args, **kwargs)

    Engine.load = _slow_load

main()
