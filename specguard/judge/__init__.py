"""Judging measurements: statistics over rounds, verdicts against a baseline and its tolerance, the
sequential decision of when to stop measuring, aggregates over categories, the checks of the gate
itself, and the rules for which stored figures judge a cell."""
