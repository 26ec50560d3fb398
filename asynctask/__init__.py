"""asynctask: a PostgreSQL-backed task queue service.

Handler authors import what a handler receives from here: `from asynctask import Task`.
"""

from asynctask.core.models import Task

__all__ = ["Task"]
