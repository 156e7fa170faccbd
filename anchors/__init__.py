"""The outside world that vouches for a seal: RFC 3161 TSA client, S3 Object
Lock publisher and reader, and the local development TSA and S3.

Never imports ``notary`` (DESIGN.md, "Layout"). The daemon composes two
narrow adapters:

- ``anchors.tsa.TimestampClient(endpoints).timestamp(signed_checkpoint)``
  -> ``TimestampToken`` (``.der`` is the DER TimeStampToken, kept byte for byte);
- ``anchors.s3.SealPublisher.open(client, bucket, prefix=, retention=)``, then
  ``.publish(tree_size, seal_json_bytes)`` -> ``SealReceipt``.

Auditing: ``anchors.tsa.verify_token`` and ``anchors.s3.SealReader``.
Development: ``anchors.devtsa`` (``notary dev-tsa``) and ``anchors.devs3``.
Errors: ``anchors.errors.AnchorError`` and its subclasses.

Proven against a real dev TSA, ``openssl ts -verify`` and a real SeaweedFS in
tests/anchors/.
"""
