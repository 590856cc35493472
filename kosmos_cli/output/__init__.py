"""Output: where records go (a file, stdout, a Parquet dataset), its life behind one `with`, and the one reader."""
