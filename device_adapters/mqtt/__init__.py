"""MQTT edge: decode uploaders' readings from a broker, forward the hub's outbox upstream."""
