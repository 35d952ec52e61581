"""The Open Inference Protocol over gRPC (KServe's and Triton's ``inference.GRPCInferenceService``): an
adapter like stratus.api, on its own port, over the same data plane, keys, scopes, limits and metering.

The messages and service stubs (inference_pb2*.py) are generated from inference.proto when the package is
built (setup.py).
"""
