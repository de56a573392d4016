"""Real components for tests and benchmarks: the CNCF distribution registry, containerd and
skopeo driven as subprocesses, and a generator of images shaped like real GPU images.

Nouns: ``registry`` (DistributionRegistry), ``containerd`` (Containerd), ``images`` (build and push
test images), ``tokenserver`` (a registry token service), ``relay`` (a TCP relay that hashes and
stores what it relays: the floor of a caching mirror's work, for ``scripts/bench-node``),
``stargz`` (the stargz snapshotter and eStargz images, for lazy pulls), ``httpproxy``
(tinyproxy, the HTTP proxy of a company network), ``procs`` (subprocess helpers). Imports
nothing from the services.
"""
