"""A Flask todo application whose SOX audit trail is notarized as it is written (see README.md)."""
