"""Bluetooth LE health devices: pure GATT codecs, sans-I/O sessions, a bleak edge, and
virtual peripherals.

Data flow: `bleak_transport` (the only bleak import) or `virtual/*` implement
`transport.GattTransport`;
`adapter` drives a `session` state machine over it and hands `mapping` results to a
`gateway.protocols.ReadingSink`. Everything except `adapter`, `bleak_transport`, `cli` and
`virtual` is pure and synchronous.
"""
