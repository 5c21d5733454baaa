"""Evaluation: every checkpoint single pass vs rumination, test-time scaling, tool use and the paper-style
table."""
