"""Helpers shared by tests and benchmarks (stand-ins started on 127.0.0.1)."""
