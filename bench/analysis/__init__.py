"""Stage 6, analysis: joins efficiency with accuracy (:mod:`.join`), Pareto fronts
(:mod:`.pareto`) and the FastVLM paper's reference points (:mod:`.reference`)."""
