"""imgaccel: container image acceleration for GPU clusters.

A per-node OCI registry mirror (``imgaccel node``) with a verified, content-addressed cache,
peer-to-peer layer distribution, a tracker, a seeder, and cluster prewarm.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
