"""Processors: Dramatiq actors that transform frames (detection) between inputs and outputs."""
