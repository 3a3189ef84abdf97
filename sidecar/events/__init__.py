"""sidecar.events"""
