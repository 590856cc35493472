"""Other places than this process to run the model (`--on`): ray.py runs the pipeline's stages on a Ray cluster.

A cluster is a strategy (pipeline.Model), as `pipeline.Here` is for this process: the run is set up the same way
(runner.py), this process lists the inputs, skips what the output holds and writes every record; only who loads
the images and runs the model differs. Ray is an extra, imported lazily by ray.py alone.
"""
