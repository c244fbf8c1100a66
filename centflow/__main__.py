"""``python -m centflow`` is the ``centflow`` command."""

from centflow.ops.cli import main

main()
