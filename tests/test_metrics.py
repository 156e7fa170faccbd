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


def test_label_values_are_escaped_so_each_sample_stays_one_line():
    """The exposition format escapes backslash, double quote and line feed in label values."""
    import re

    value = 'say "hi"\\\nbye'
    m = Metrics()
    m.inc("notary_ingest_rejected_total", reason=value)
    samples = [line for line in m.render().splitlines() if not line.startswith("#")]
    assert len(samples) == 1
    quoted = re.fullmatch(r'notary_ingest_rejected_total\{reason="((?:[^"\\]|\\.)*)"\} 1', samples[0])
    assert quoted, samples[0]
    unescaped = re.sub(r"\\(.)", lambda g: {"n": "\n"}.get(g.group(1), g.group(1)), quoted.group(1))
    assert unescaped == value


def test_non_finite_values_are_written_as_the_format_spells_them():
    m = Metrics()
    m.set("notary_a", float("nan"))
    m.set("notary_b", float("inf"))
    m.set("notary_c", float("-inf"))
    m.set("notary_d", 2.0)
    text = m.render()
    assert "notary_a NaN\n" in text and "notary_b +Inf\n" in text and "notary_c -Inf\n" in text
    assert "notary_d 2\n" in text
