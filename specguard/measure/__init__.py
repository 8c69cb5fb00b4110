"""Measuring a cell: the closed-loop SSE load client, the speculative-decoding counters read from vLLM's
Prometheus /metrics, and the rounds (or plain/speculative pairs) of one cell."""
