"""Generated code of the autoglm.v1 protos (scripts/generate_protos.py); do not edit."""
