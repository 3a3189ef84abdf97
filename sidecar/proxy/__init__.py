"""The grpc.aio pass-through proxy: routing, raw-bytes forwarding, deadlines, breakers, fallbacks."""
