"""Tokenizer training on the user's corpus."""
