"""The typed keys of everything the app carries, declared in one place."""

from __future__ import annotations

from typing import Final

import aiopg
from aiohttp import web

from asynctask.core.config import Config
from asynctask.core.stats import CachedStats
from asynctask.service.events import Broadcaster
from asynctask.service.group_commit import GroupCommit
from asynctask.service.metrics import ApiMetrics
from asynctask.service.rules import TaskRules
from asynctask.service.tokens import Identity, Tokens

CONFIG: Final = web.AppKey("config", Config)
POOL: Final = web.AppKey("pool", aiopg.Pool)
CREATES: Final = web.AppKey("creates", GroupCommit)
RULES: Final = web.AppKey("rules", TaskRules)
STATS: Final = web.AppKey("stats", CachedStats)
METRICS: Final = web.AppKey("metrics", ApiMetrics)
TOKENS: Final = web.AppKey("tokens", Tokens)
EVENTS: Final = web.AppKey("events", Broadcaster)
IDENTITY: Final = web.RequestKey("identity", Identity)
