"""Nightscout's API v1 over the hub: uploads and follower reads of glucose entries and
treatments.

`entries` and `treatments` are the protocol (pure: bytes in, readings or treatments out; and
back into Nightscout's JSON); `routes` is their HTTP edge on the dashboard app.
"""
