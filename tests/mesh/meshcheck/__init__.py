"""Offline validation of the manifests in mesh/: render, schemas, Istio CRDs with CEL, cross-resource checks.

Each check returns a list of problems (strings a person can act on), so the same code serves the
positive tests (expect none) and the negative tests (expect the right one).
"""
