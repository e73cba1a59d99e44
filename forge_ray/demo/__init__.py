"""Generated demo data (a fictional company knowledge base)."""
