"""`kosmos view`: a local page over a results file, to look at what the model found before exporting it.

    from kosmos_cli.view import serve, start
    serve("results.parquet")                      # until Ctrl-C; prints the address
    with start("results.parquet", port=0) as viewer:
        print(viewer.url)                         # a running server, for tests and notebooks

reading.py        the one way into a results file, through output/reader/: card columns of every record, one record
cards.py          what every opened results file offers (Results), the card columns, values made fit to show
parquet_table.py  a Parquet file or folder of parts, read by column and by row group
jsonl_table.py    a JSONL file read once into a table of cards, each record's byte offset kept
index.py          the query (filters, sort) over flat arrays of records and boxes; a record as a card
thumbs.py         the images, in the displayed frame, made on demand and cached within a bound
export.py         the `kosmos export` command line for what is shown
current.py        the results as they are now: one reading and its index, read again once the file changed
guard.py          which requests are answered at all (origin form, a Host naming this server); the security headers
handler.py        the HTTP routes: the page, its JSON API, the images, the download of what is shown; nothing else
server.py         the server: bound to its address, started on a thread or served until Ctrl-C
static/           the page: index.html, view.js, view.css (no build step)
"""

from .server import DEFAULT_PORT, Viewer, serve, start

__all__ = ["DEFAULT_PORT", "Viewer", "serve", "start"]
