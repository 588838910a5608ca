"""Regression checks on results: ``compare`` (candidate vs base) and ``gate`` (CI thresholds),
with their shared statistics (:mod:`.stats`), row handling (:mod:`.rows`) and views (:mod:`.render`)."""
