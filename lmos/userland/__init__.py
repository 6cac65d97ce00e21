"""Userland: apps, tools, the sandbox for untrusted code, the agent loop and the shell.

Everything here acts on the system only through syscalls; code that arrived
with an app or was written by a user runs in the process-isolated sandbox
(``lmos.userland.sandbox``), never in the kernel's process.
"""
