"""The `asynctask` command: the top layer, which starts the API and the workers.

Nothing below it imports it: asynctask.core is imported by the API (asynctask.service) and the
workers (asynctask.workers), and this package puts them together.
"""

from asynctask.cli.main import main

__all__ = ["main"]
