"""sidecar.breaker"""
