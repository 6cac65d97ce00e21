"""lmos's training flow: data format, synthetic corpus, tokenizer, trainer and CLI.

A front end (like ``lmos/cli.py``): it may import any layer below, and nothing
below imports it.  Heavy libraries (torch, transformers, peft, tokenizers) are
imported inside the functions that need them, so importing this package is cheap.
"""
