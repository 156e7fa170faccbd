"""The outside world that vouches for a seal: RFC 3161 TSA client, S3 Object
Lock publisher and reader, and the local development TSA.

Never imports ``notary`` (DESIGN.md, "Layout").
"""
