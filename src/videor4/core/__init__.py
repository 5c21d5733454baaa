"""Foundations every layer shares: atomic files and JSON lines (io), the dataset records (schema), answer scoring (scoring)."""
