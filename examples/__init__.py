"""Runnable integrations of merkle-notary, each started by one command (see each folder's README)."""
