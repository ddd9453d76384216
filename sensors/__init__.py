"""Typed sensor data, readers, multi-sweep accumulation, timestamp synchronization, pose interpolation."""
