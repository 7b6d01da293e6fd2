"""What the server measures about itself: histograms, gauges and probes (docs/PERFORMANCE.md)."""
