"""Benchmarks of the fbvision pipeline (pytest-benchmark suites, report builder). See docs/benchmarks.md."""
