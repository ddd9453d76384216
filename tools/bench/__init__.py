"""Benchmark runners behind `avfusion bench`; `common` holds the timing and reporting rules."""
