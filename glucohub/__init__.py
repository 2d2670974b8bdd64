"""Glucohub's composition root: the command line, the running hub and the demo.

The only package that imports every other one (device_adapters, dashboards, gateway,
ledger); nothing imports it back.
"""
