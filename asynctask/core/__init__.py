"""The shared core: configuration, the task model, errors and the SQL catalogue.

Imported by the HTTP API (asynctask.service) and the workers (asynctask.workers), never the other
way round; nothing here imports aiohttp.
"""
