"""Clinical cores: alert rules, forecasts, consensus metrics and the AGP report.

Pure and synchronous: every function takes `now` (or the data) as an argument. The alert
engine imports no pandas (the hub runs on a Raspberry Pi); only `metrics` and `report` do.
"""
