"""Evaluation: task suites, perplexity/bits-per-byte, side-by-side comparison, judges, reports."""
