"""Tools that LLM processes call: each module holds one tool's pure core, free of kernel state."""
