"""Parquet files that hold the images themselves: img2dataset's Parquet output (`jpg`, a binary column), Hugging
Face datasets exported to Parquet (an Image feature: a struct whose `bytes` field holds the file).

Rows are read in batches of BATCH_ROWS, so memory holds a batch, never the table. Each row is one Item: its path
`TABLE#KEY` (the value of the key column, `key` unless `--key-column` names another), its bytes from the image
column, every other column carried like a manifest's. A row whose image is null, or larger than the cap
(`--max-image-mb`), is an error Item; a row whose key is null is skipped with a warning (nothing could find it
again) and counted in `Unlisted`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ..carried_columns import from_parquet
from ..listing import Columns, Item, Unlisted
from .base import FetchOptions

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("kosmos_cli")

BATCH_ROWS = 64  # rows read at once: images of a few hundred KB each keep a batch to tens of MB
DEFAULT_KEY = "key"


def iter_table(
    path: str,
    columns: Columns,
    opener=open,
    unseen: Unlisted | None = None,
    fetch: FetchOptions = FetchOptions(),
) -> Iterator[Item]:
    """One Item per row of the Parquet file at `path`, in its order; `opener(path, "rb")` opens it (fsspec's, for
    a table in object storage). InputError, in one line, when the image or key column is not in it. `unseen`
    counts the rows skipped; an image over `fetch.max_bytes` is its row's error."""
    import pyarrow.parquet as pq

    assert columns.image is not None
    with opener(path, "rb") as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"cannot read {path}: {exc}") from None
        image, key = image_and_key(pf.schema_arrow, path, columns)
        number = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            images = image_bytes(batch.column(image))
            rest = batch.drop_columns([image]).to_pylist()
            for data, row in zip(images, rest):
                number += 1
                name = row.get(key)
                if name is None or str(name) == "":
                    log.warning("%s row %d has no %r: skipped", path, number, key)
                    if unseen is not None:
                        unseen.skip(f"{path} row {number}")
                    continue
                item_path = f"{path}#{name}"
                extra = from_parquet(row)
                if data is None:
                    yield Item(item_path, extra, error=f"the row has no image (its {image!r} is null)")
                elif len(data) > fetch.max_bytes:
                    yield Item(item_path, extra, error=f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb)")
                else:
                    yield Item(item_path, extra, data=data, stat=(len(data), None))


def image_and_key(schema: pa.Schema, path: str, columns: Columns) -> tuple[str, str]:
    """The names of the image and key columns, checked against the file's `schema`."""
    names = schema.names
    image, key = columns.image or "", columns.key or DEFAULT_KEY
    if image not in names:
        raise InputError(
            f"{path} has no {image!r} column (--image-column): its columns are {', '.join(map(repr, names))}"
        )
    if not readable_image(schema.field(image).type):
        raise InputError(
            f"{path}: the {image!r} column holds {schema.field(image).type}, not image bytes: name the column of "
            "binary image files (or of structs with `bytes`) with --image-column"
        )
    if key not in names:
        raise InputError(f"{path} has no {key!r} column to name each row: name one with --key-column")
    return image, key


def readable_image(data_type: Any) -> bool:
    """A binary column, or a struct with a binary `bytes` field (a Hugging Face Image feature)."""
    import pyarrow as pa

    if pa.types.is_struct(data_type):
        index = data_type.get_field_index("bytes")
        return index >= 0 and readable_image(data_type.field(index).type)
    return bool(pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type))


def image_bytes(column: Any) -> list[bytes | None]:
    """The bytes of each row of an image column (binary, or a struct with `bytes`); None where there are none."""
    import pyarrow as pa

    if pa.types.is_struct(column.type):
        column = column.field("bytes")
    return column.to_pylist()
