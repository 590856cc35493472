"""The model: a checkpoint loaded once, batches of prepared requests decoded on the device."""
