"""The ``trainer-agent`` command: a gRPC client of the gateway, the embedded launcher and offline planning."""
