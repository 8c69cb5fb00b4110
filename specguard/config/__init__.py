"""The configuration of a run: the matrix (which vLLM servers to start, which workloads to send them) and
its TOML parsing, the benchmark prompt sets, the tolerances, and the error types raised on bad input."""
