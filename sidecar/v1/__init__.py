"""Generated protobuf code: run scripts/genproto.py."""
