"""Reports of a finished run: the Markdown report built from pytest-benchmark JSON, the Markdown helpers,
the PNG plots, and the roofline (the speed of light for decoding)."""
