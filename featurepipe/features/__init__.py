"""Handcrafted feature extractors (image → vector), one module per feature family."""
