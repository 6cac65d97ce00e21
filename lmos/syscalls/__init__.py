"""The syscall layer: typed requests, the table, capability checks, audit."""
