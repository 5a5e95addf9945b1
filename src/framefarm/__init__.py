"""framefarm: a video-analytics pipeline server run like nginx and configured like fluent-bit."""

__version__ = "0.1.0"
