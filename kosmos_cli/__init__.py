"""kosmos_cli: ground large image collections with Kosmos-2.

Importing this package is light: torch and transformers load only when a model does.
"""

from .api import draw, eval_results, export, find, ground, load_engine, refer
from .errors import InputError, KosmosError, ModelError, OutputError, UsageError
from .output.formats import read_records
from .run.plan import Plan
from .tasks import FindRecord, GroundRecord, ReferRecord
from .tasks.records import Entity, Record

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
