"""vLLM's own offline `LLM.generate`, run in a subprocess as the reference for greedy output.

A subprocess, because a second vLLM engine in the test process would double its memory and its
start-up (and LLM's engine core is a spawned process too). Prints the token ids as JSON.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    model, prompt_json, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="bfloat16", enforce_eager=True, kv_cache_memory_bytes=256 << 20, max_model_len=2048)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    (output,) = llm.generate([{"prompt_token_ids": json.loads(prompt_json)}], params, use_tqdm=False)
    print("REFERENCE " + json.dumps(list(output.outputs[0].token_ids)), flush=True)


if __name__ == "__main__":
    main()
