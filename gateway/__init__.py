"""Glucohub gateway: validate, store, batch, seal and alert on home health readings.

The vocabulary other packages may import is `gateway.model`, `gateway.units`,
`gateway.errors`, `gateway.clock`, `gateway.protocols` and the pure `gateway.clinical`
package; everything else here is the hub's own pipeline. The wiring lives in `glucohub/`.
"""
