"""The one reader of results files: draw, export, eval, view, import and resume read results through here.

`files.py` says what a results path is (a JSONL file, a Parquet file, a dataset folder here or in a bucket, a file
output's `<out>.parts/`; anything else refused in one line) and yields its rows, as each caller needs them;
`results.py` turns rows into typed `Result`s, or a `Bad` that is warned, skipped and counted.
"""

from .files import (
    DRAW,
    FOLDER,
    JSONL,
    NOT_JSON,
    NOT_RESULTS,
    NOT_UTF8,
    PARQUET,
    TOO_DEEP,
    VIEW,
    Bad,
    Source,
    Unreadable,
    Wording,
    check_regular,
    loads,
    open_parquet,
    parquet_rows,
    parquet_task,
    read_records,
    results_path,
    resume_rows,
    rows,
)
from .results import NOT_A_RECORD, BadRecord, Box, NotARecord, Region, Result, locate, read, result_of

__all__ = [
    "DRAW",
    "FOLDER",
    "JSONL",
    "NOT_A_RECORD",
    "NOT_JSON",
    "NOT_RESULTS",
    "NOT_UTF8",
    "PARQUET",
    "TOO_DEEP",
    "VIEW",
    "Bad",
    "BadRecord",
    "Box",
    "NotARecord",
    "Region",
    "Result",
    "Source",
    "Unreadable",
    "Wording",
    "check_regular",
    "locate",
    "loads",
    "open_parquet",
    "parquet_rows",
    "parquet_task",
    "read",
    "read_records",
    "result_of",
    "results_path",
    "resume_rows",
    "rows",
]
