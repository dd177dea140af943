"""HTML of StackExchange posts to text: moved to :mod:`rankalign.data.stackexchange.html_text`
(this name stays for the modules that import it)."""

from rankalign.data.stackexchange.html_text import has_code_block, html_to_text, html_to_texts

__all__ = ["has_code_block", "html_to_text", "html_to_texts"]
