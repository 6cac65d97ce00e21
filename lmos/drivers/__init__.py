"""Model drivers: the contract (base), the scripted driver and the transformers driver."""
