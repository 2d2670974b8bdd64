"""Device adapters: bytes from devices in, `gateway.model` readings out (BLE, MQTT, virtual)."""
