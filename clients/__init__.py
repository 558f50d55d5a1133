"""The wwws clients: ``wwws.py`` (Python, asyncio) and ``wwws.js`` (browsers, served by
every service at ``/<service>/wwws.js``). Both speak docs/protocol.md and reconnect and
resume on their own; the services do not import this package."""
