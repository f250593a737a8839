"""Server agent: deploys model bundles as Open Inference Protocol v2 endpoints and measures their latency.

The inference path is ``runtime`` (onnxruntime plus the training preprocessing), ``oip`` (the OIP v2
servicer that translates tensors), ``endpoint`` (one gRPC server per deployment) and ``bench`` (the
out-of-process latency client).
"""
