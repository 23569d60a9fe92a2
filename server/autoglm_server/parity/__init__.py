"""Parity: the serving engines' output against transformers' own generate (`autoglm-server check-parity`).

`reference.py` runs the model as transformers' documentation does (its image processor, its chat
template, `generate`); `compare.py` finds the first divergent position of two greedy runs; `check.py`
runs one engine on the same step and prints the verdict. Nothing here is on the request path.
"""
