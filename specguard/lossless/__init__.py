"""The lossless check: greedy outputs with and without drafts, compared token id by token id, near-ties
told apart from real divergences."""
