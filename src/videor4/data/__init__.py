"""Datasets: the procedural video world (synthetic), evidence matching (ocr, evidence), trajectory synthesis,
quality control, validation (Great Expectations) and the build."""
