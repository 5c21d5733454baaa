"""Loaders for datasets users bring: M4-ViteVQA, multi-page documents (MP-DocVQA, SlidesVQA), multiple-choice
video QA."""
