"""Compression: int8 quantization (dynamic and calibrated static), fp16, graph optimization, pruning and
distillation, each variant measured against its parent and the fastest one within an accuracy budget
recommended. The service is torch-free; the methods run in a child process (compress/worker.py)."""
