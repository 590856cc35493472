"""kosmos_cli: ground large image collections with Kosmos-2.

Importing this package is light: torch and transformers load only when a model does.
"""

import logging

from .api import draw, eval_results, export, find, ground, load_engine, refer
from .errors import InputError, KosmosError, ModelError, OutputError, UsageError, redact_log
from .output.reader import read_records
from .run.plan import Plan
from .tasks import FindRecord, GroundRecord, ReferRecord
from .tasks.records import Entity, Record

logging.getLogger("kosmos_cli").addFilter(redact_log)  # no log line carries a URL's credentials

__version__ = "0.1.0"

__all__ = [
    "Entity",
    "FindRecord",
    "GroundRecord",
    "InputError",
    "KosmosError",
    "ModelError",
    "OutputError",
    "Plan",
    "Record",
    "ReferRecord",
    "UsageError",
    "draw",
    "eval_results",
    "export",
    "find",
    "ground",
    "load_engine",
    "read_records",
    "refer",
    "__version__",
]
