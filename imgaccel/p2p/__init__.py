"""Peer-to-peer layer distribution.

Nouns: ``certs`` (the cluster CA and node certificates that authenticate peers and the tracker API).
Core package: imports nothing from the CLI or the web services.
"""
