"""``python -m centflow`` is the ``centflow`` command."""

from centflow.cli import main

main()
