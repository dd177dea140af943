"""rankalign: list-wise, attribute-aware, self-supervised preference alignment of LLMs."""

__version__ = "0.1.0"
