"""The kernel core: processes, scheduler, KV policy, IPC, events, journal."""
