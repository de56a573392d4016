"""Real components for tests and benchmarks: the CNCF distribution registry, containerd and
skopeo driven as subprocesses, and a generator of images shaped like real GPU images.

Nouns: ``registry`` (DistributionRegistry), ``containerd`` (Containerd), ``images`` (build and push
test images), ``procs`` (subprocess helpers). Imports nothing from the services.
"""
