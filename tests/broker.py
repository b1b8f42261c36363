"""The test fixtures' Mosquitto: `ivs.localnet`'s, under the names the tests use."""

from ivs.localnet import LocalMosquitto as Mosquitto
from ivs.localnet import free_port

__all__ = ["Mosquitto", "free_port"]
