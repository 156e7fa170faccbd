"""Signing keys in a PKCS#11 token: signer, key lifecycle, rotation.

Never imports ``notary`` (DESIGN.md, "Layout"). One module per job:

- ``hsm.errors``: ``HSMError`` and its subclasses, one sentence each, with an ``exit_code``;
- ``hsm.pin``: ``PinSource`` - the PIN from a file, an environment variable or a systemd credential;
- ``hsm.algorithms``: ECDSA P-256 (note type 0x02) and Ed25519 (0x01) as PKCS#11 and notes see them;
- ``hsm.token``: ``Token`` - one logged-in session, every PKCS#11 call on one thread;
- ``hsm.signer``: ``HSMSigner`` (a ``notary.note.NoteSigner``) and ``active_signers``;
- ``hsm.keyring``: the keyring file, the key lifecycle and the key-event records;
- ``hsm.devtoken``: SoftHSM2 tokens for development and tests.

What the daemon does with it::

    config = TokenConfig(module=Path(...), token_label="...", pin=PinSource.parse("credential:hsm-pin"))
    token = await asyncio.to_thread(Token.open, config)      # once, at start-up
    keyring = Keyring.load(Path("var/keyring.json"))         # keyring.name must be the log's origin
    for event in keyring.unlogged_events(last_logged_digest):
        ...append event.digest() to the log...
    signers = await asyncio.to_thread(active_signers, token, keyring)
    note = await sign_note(text, keyring.name, signers)      # one signature per active key
"""
