"""Dashboards: the aiohttp edge that shows readings, alerts and the ledger to people."""
