"""The generation engine: domain types, the Engine protocol, scheduler and model runner.

Nothing here imports protobuf; only runner/model modules import torch.
"""
