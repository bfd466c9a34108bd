"""facepipe: index faces across huge image archives with Ray Data."""

__version__ = "0.1.0"
