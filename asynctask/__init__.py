"""asynctask: a PostgreSQL-backed task queue service.

Handler authors import from here what a handler receives and what it may raise:
`from asynctask import Task, Retry, Cancel`.
"""

from asynctask.core.control import Cancel, Retry
from asynctask.core.models import Task

__all__ = ["Cancel", "Retry", "Task"]
