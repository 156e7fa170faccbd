"""A payments company's quarterly evidence run: PCI DSS / GDPR oriented audit trail and evidence pack (see README.md)."""
