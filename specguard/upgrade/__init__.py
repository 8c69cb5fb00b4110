"""Comparing vLLM builds: the A/B of two benchmark JSONs, and the paired upgrade check that runs an old and
a new build of one server config together, rounds interleaved."""
