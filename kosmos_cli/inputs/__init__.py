"""Inputs: arguments, folders, manifests, URLs and containers become a stream of items; images open as displayed."""
