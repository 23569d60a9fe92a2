"""The built-in engine: continuous batching over a transformers model, in one engine thread.

`async_engine.py` is its face (the Engine protocol over the engine thread); `loader.py`,
`builtin_models.py` and `memory.py` load a model and size its KV budget; `scheduler.py` and `prefill.py`
decide who runs (no torch); `core.py`, `runner.py`, `kvcache.py` and `sampling.py` step the model;
`sequence.py`, `detokenize.py` and `stops.py` turn one request's tokens into text. The only package,
with engine/vllm, that imports torch.
"""
