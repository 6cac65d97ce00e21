"""``python -m lmos.cli``: the ``lmos`` command."""

from lmos.cli import main

main()
