"""Signing keys in a PKCS#11 token: signer, key lifecycle, rotation.

Never imports ``notary`` (DESIGN.md, "Layout").
"""
