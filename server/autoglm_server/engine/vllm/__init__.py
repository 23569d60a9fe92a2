"""The vLLM engine: the Engine protocol over vLLM's in-process async engine (AsyncLLM).

This package is the only place that imports vllm, and it does so only in `engine.py`, `stats.py`
and `outputs.py` (chat rendering with images is shared: engine/vision_chat.py); `settings.py` and
`args.py` stay importable without vllm so that the
daemon's settings (and the benchmarks) can describe a vLLM engine on a machine that has none.
"""
