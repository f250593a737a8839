"""The Model agent: the zoo, training, ONNX export and bundles (domain code), the service and the worker."""
