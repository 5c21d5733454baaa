"""Video-R4: visual rumination for text-rich video QA."""

__version__ = "0.1.0"
