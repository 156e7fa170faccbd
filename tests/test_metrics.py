"""notary.metrics: the Prometheus text the daemon serves."""


from notary.metrics import Metrics


def test_metrics_print_large_counts_exactly():
    m = Metrics()
    m.set("notary_anchored_tree_size", 1_000_002)
    m.inc("notary_ingest_rejected_total", reason="malformed")
    m.set("notary_oldest_unanchored_seal_age_seconds", 0.25)
    text = m.render()
    assert "notary_anchored_tree_size 1000002\n" in text
    assert 'notary_ingest_rejected_total{reason="malformed"} 1\n' in text
    assert "notary_oldest_unanchored_seal_age_seconds 0.25\n" in text
