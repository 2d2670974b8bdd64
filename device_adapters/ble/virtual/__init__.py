"""In-memory BLE peripherals that speak the real GATT bytes (encoded with our encoders).

`VirtualMeter`, `VirtualCgm` and `VirtualHeartRateStrap` implement `GattTransport`, so the real
`BleAdapter` drives them exactly as it drives a bleak connection.
"""

from device_adapters.ble.virtual.cgm import VirtualCgm
from device_adapters.ble.virtual.heart_rate import VirtualHeartRateStrap
from device_adapters.ble.virtual.meter import VirtualMeter

__all__ = ["VirtualCgm", "VirtualHeartRateStrap", "VirtualMeter"]
