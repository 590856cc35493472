"""`kosmos`, with one rank of a multi-process run dying hard: what a segfault or the OOM killer does.

    torchrun --nproc_per_node 2 tests/rank_crash.py ground PHOTOS --out r.jsonl ...

The rank named by $KOSMOS_TEST_CRASH_RANK ends with os._exit after its first batch is computed, before that
batch is written: no status, no message, no cleanup.
"""

import os

from kosmos_cli import pipeline
from kosmos_cli.cli import main

if os.environ.get("RANK") == os.environ.get("KOSMOS_TEST_CRASH_RANK", "-"):
    forward = pipeline._forward

    def _forward_then_die(*args, **kwargs):
        forward(*args, **kwargs)
        os._exit(3)

    pipeline._forward = _forward_then_die

main()
