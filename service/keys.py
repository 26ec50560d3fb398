"""The typed keys of everything the app carries, declared in one place."""

from __future__ import annotations

from typing import Final

import aiopg
from aiohttp import web

from asynctask.core.config import Config
from asynctask.core.stats import CachedStats
from asynctask.service.bodies import BodyReader
from asynctask.service.events import Broadcaster
from asynctask.service.group_commit import GroupCommit
from asynctask.service.inflight import InFlight
from asynctask.service.metrics import ApiMetrics
from asynctask.service.rules import TaskRules
from asynctask.service.tokens import Identity, Tokens
from asynctask.service.waiters import Waiters

CONFIG: Final = web.AppKey("config", Config)
POOL: Final = web.AppKey("pool", aiopg.Pool)
CREATES: Final = web.AppKey("creates", GroupCommit)
RULES: Final = web.AppKey("rules", TaskRules)
STATS: Final = web.AppKey("stats", CachedStats)
METRICS: Final = web.AppKey("metrics", ApiMetrics)
BODIES: Final = web.AppKey("bodies", BodyReader)
# The Host names answered without a token (empty when tokens are set: then any Host is fine).
HOSTS: Final = web.AppKey("hosts", frozenset[str])
IN_FLIGHT: Final = web.AppKey("in_flight", InFlight)
WAITERS: Final = web.AppKey("waiters", Waiters)
TOKENS: Final = web.AppKey("tokens", Tokens)
EVENTS: Final = web.AppKey("events", Broadcaster)
IDENTITY: Final = web.RequestKey("identity", Identity)
