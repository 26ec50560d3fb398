"""What the supervisor's forkserver preloads: the worker's modules, and its own process title.

Imported only by that forkserver (supervisor.PRELOAD), so that `ps` names it; each worker it forks
sets its own title at once (workers/process.py run_worker).
"""

from setproctitle import setproctitle

import asynctask.workers.process  # noqa: F401 - imported for the forked workers to inherit

setproctitle("asynctask forkserver")
