"""The typed keys of everything the app carries, declared in one place."""

from __future__ import annotations

from typing import Final

import aiopg
from aiohttp import web

from service.config import Config
from service.group_commit import GroupCommit
from service.metrics import ApiMetrics
from service.schemas import TaskRules
from service.stats import CachedStats

CONFIG: Final = web.AppKey("config", Config)
POOL: Final = web.AppKey("pool", aiopg.Pool)
CREATES: Final = web.AppKey("creates", GroupCommit)
RULES: Final = web.AppKey("rules", TaskRules)
STATS: Final = web.AppKey("stats", CachedStats)
METRICS: Final = web.AppKey("metrics", ApiMetrics)
