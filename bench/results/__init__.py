"""Stage 4, results: the record schema (:mod:`.records`), the store of one JSON file per point
plus the consolidated table (:mod:`.store`), and the one atomic file writer (:mod:`.io`)."""
