"""Architectures (``catalog`` without torch, ``build`` with it), the networks themselves, and running them."""
