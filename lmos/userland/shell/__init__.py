"""lmosh, the shell: the loop in :mod:`.core`, commands by concept in sibling modules."""

from lmos.userland.shell.core import PROMPT, Job, Shell, Terminal, shell_main, split_commands
from lmos.userland.shell.render import describe, render_result, to_builtins

__all__ = ["PROMPT", "Job", "Shell", "Terminal", "describe", "render_result", "shell_main",
           "split_commands", "to_builtins"]
