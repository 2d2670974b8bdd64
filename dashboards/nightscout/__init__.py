"""Nightscout's API v1 over the hub: uploads and follower reads of glucose entries.

`entries` is the protocol (pure: bytes in, readings out; readings in, entries out);
`routes` is its HTTP edge on the dashboard app.
"""
