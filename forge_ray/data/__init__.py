"""Data layer: sources, validation, cleaning, tokenisation and packing on Ray Data."""
