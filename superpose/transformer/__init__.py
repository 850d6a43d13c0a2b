"""Transformers from one set of parts: decoder-only GPT, BERT-style encoder, encoder-decoder."""
