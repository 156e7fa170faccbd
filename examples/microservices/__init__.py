"""Several services, one notary per host, and a central notary over the hosts (see README.md)."""
