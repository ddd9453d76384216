"""The replay engine: plan, per-frame processing, resume, Ray sharding, run summaries."""
