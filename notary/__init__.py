"""merkle-notary: an append-only RFC 9162 Merkle log whose checkpoints are
signed in an HSM, timestamped by an RFC 3161 TSA and published under S3
Object Lock.

This package holds the log and everything that speaks its formats. The
``hsm`` and ``anchors`` packages are adapters it composes; they never import
it (see DESIGN.md, "Layout").
"""
