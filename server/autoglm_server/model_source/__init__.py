"""Where a model comes from: `--model s3://bucket/prefix` becomes a verified local directory.

The source resolves once, in cli.py, before any engine is built: engines receive a directory and never
see a credential or a network error (an import-linter contract in pyproject.toml keeps them apart).
With --s3-weights stream, vLLM also gets the weights' URI, as an ordinary vLLM argument. The steps,
one module each:

    uri.py       parse s3://bucket/prefix; refuse keys that would leave the cache directory
    settings.py  the --model-cache-dir, --s3-* and --model-download-* settings
    client.py    a boto3 S3 client from the standard AWS chain (or a Vault KV path), errors classified
    listing.py   what the prefix holds: files, sizes, ETags, the manifest; the snapshot id
    cache.py     the cache layout, the node-wide lock, the atomic snapshot
    download.py  parallel ranged GETs into .part files, resumable, retried with backoff
    verify.py    sizes, S3 full-object checksums, the sha256 manifest
    resolve.py   the one entry point: resolve_model(settings) -> ResolvedModel
    streaming.py --s3-weights stream: the safetensors stay in the bucket for vLLM's Run:ai streamer
    push.py      `autoglm-server model push DIR s3://...`: multipart upload and the manifest
"""
