"""Operator tools: what the pipeline is doing now (status), and what flows over the bus (tail)."""
