"""Prometheus text exposition for the daemon's counters and gauges.

Names carry the ``notary_`` prefix, base units, and ``_total`` for counters
(https://prometheus.io/docs/practices/naming/). Small on purpose: a dict of
samples rendered on each scrape.
"""

from __future__ import annotations

import math
from collections import defaultdict


def _number(value: float) -> str:
    """Integers exactly (``:g`` would print 1000002 as 1e+06), other floats in full, and NaN
    and the infinities as the exposition formats spell them (``NaN``, ``+Inf``, ``-Inf``)."""
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _label_value(value: str) -> str:
    """A label value between double quotes: backslash, double quote and line feed escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._samples[name]
        series[key] = series.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._samples[name][tuple(sorted(labels.items()))] = value

    def value(self, name: str, **labels: str) -> float:
        return self._samples.get(name, {}).get(tuple(sorted(labels.items())), 0)

    def render(self) -> str:
        lines = []
        for name in sorted(self._samples):
            lines.append(f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}")
            for labels, value in sorted(self._samples[name].items()):
                label_text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
                text = _number(value)
                lines.append(f"{name}{{{label_text}}} {text}" if label_text else f"{name} {text}")
        return "\n".join(lines) + "\n"
