"""The breaker event log service: append-only store, projections, audit, gRPC API.

Shares only the protos (``sidecar.v1``) and the hash chain (``sidecar.chain``) with the sidecar.
"""
