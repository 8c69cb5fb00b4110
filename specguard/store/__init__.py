"""What runs leave on disk: the stored baselines, the per-cell results written as each cell finishes, and
the pytest-benchmark JSON read back for reports."""
