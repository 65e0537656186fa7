"""WIT-style dataset construction: query list, curation, download, audit."""

__version__ = "0.1.0"
