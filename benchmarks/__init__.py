"""Benchmarks of the engine and the job path; see benchmarks/README.md."""
