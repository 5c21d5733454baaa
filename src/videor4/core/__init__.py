"""Foundations every layer shares: atomic files and JSON lines (io), the dataset records (schema), answer
scoring (scoring), strict params sections (params) and the process topology of a multi-process launch
(launch)."""
