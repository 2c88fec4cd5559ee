"""Benchmarks: SmartCash measured against its peers in one run (`python -m benchmarks.<name>`)."""
