"""Stage 3, measure: the point runner, the stage timer, statistics, FLOP counting, device
trackers and probes, the environment snapshot and sweep progress.

Modules are imported by path (``bench.measure.timer``, ...); this package imports nothing
so that a light user (the report, ``list``) never pays for torch.
"""
