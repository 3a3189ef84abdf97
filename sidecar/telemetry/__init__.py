"""sidecar.telemetry"""
