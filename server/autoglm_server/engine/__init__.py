"""The generation engines behind one protocol.

`protocol.py` (the Engine protocol), `types.py` (domain types: requests, deltas, chat messages,
images), `settings.py` (limits both engines honour) and `chat_template.py` (chat rendering) are shared;
`builtin/` is the continuous-batching engine over transformers, `vllm/` the adapter over vLLM's
AsyncLLM. Nothing above this package knows which engine runs, and nothing here imports protobuf.
"""
