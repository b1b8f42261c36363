"""A Modbus TCP server on the sensor (pymodbus): what a PLC polls.

The map follows the sensor's `apps:` in order (`ivs.sinks.plant`):

    coils 0..      one per bool value: each safety zone's stop flag (1 = stopped), each
                   crowding app's crowded flag; the same as discrete inputs
    registers 0..  two per count (uint32, high word first): a line's in and out, a zone's
                   occupancy and entries; the same as holding and input registers

Everything is read-only: a write is answered with Modbus exception 1 (illegal function). Each
read is served from the values the last event set, so a stop reads 1 from the moment the stop
event of its frame is written. `map()` lists every address with its app and field; the sensor
logs it at start.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from ivs.errors import ConfigError
from ivs.sinks.plant import LoopThread, PlantState, Point

log = logging.getLogger(__name__)

BIT_CODES = frozenset({1, 2, 5, 15})
"""Function codes on coils and discrete inputs (the rest are on registers)."""


class ModbusSink:
    """Serves `points` on host:port until `close`."""

    def __init__(self, points: list[Point], host: str = "127.0.0.1", port: int = 502) -> None:
        try:
            from pymodbus.constants import ExcCodes
            from pymodbus.server import ModbusTcpServer
            from pymodbus.simulator import DataType, SimData, SimDevice
        except ImportError:
            raise ConfigError("a modbus sink needs pymodbus: expected `pip install 'ivs[plant]'`") from None
        self.state = PlantState(points)
        self.bits = [p for p in points if p.kind == "bool"]
        self.words = [p for p in points if p.kind == "uint32"]
        self.host, self.port = host, port
        self._illegal = ExcCodes.ILLEGAL_FUNCTION
        n_bits = max(1, len(self.bits))  # pymodbus keeps 16 coils in a register, coil n in bit n % 16
        n_regs = max(1, 2 * len(self.words))
        device = SimDevice(
            id=0,
            use_bit_addressing=True,  # coil n is bit n % 16 of register n // 16 (not register n)
            simdata=(
                [SimData(0, count=n_bits, values=False, datatype=DataType.BITS)],
                [SimData(0, count=n_bits, values=False, datatype=DataType.BITS)],
                [SimData(0, count=n_regs, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=n_regs, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._serve,
        )
        self._loop = LoopThread("ivs-modbus")
        self._server: Any = None

        async def start() -> None:
            self._server = ModbusTcpServer(context=device, address=(host, port))
            await self._server.serve_forever(background=True)

        try:
            self._loop.run(start(), 10)
        except (OSError, RuntimeError) as err:
            self._loop.stop()
            raise ConfigError(f"modbus sink: cannot listen on {host}:{port}: {err}") from None
        log.info("Modbus TCP on %s:%d: %s", host, port, "; ".join(self.map()))

    async def _serve(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> Any:
        """pymodbus's action on every request: refuse writes, fill the requested block from the
        current values (`registers` is the block pymodbus answers from)."""
        if values is not None:
            return self._illegal
        if function_code in BIT_CODES:
            for r in range(len(registers)):
                word = 0
                for k, point in enumerate(self.bits[16 * r : 16 * r + 16]):
                    word |= (self.state.value(point) & 1) << k
                registers[r] = word
        else:
            for k, point in enumerate(self.words):
                v = self.state.value(point) & 0xFFFFFFFF
                if 2 * k + 1 < len(registers):
                    registers[2 * k], registers[2 * k + 1] = v >> 16, v & 0xFFFF
        return None

    def map(self) -> list[str]:
        """Every address, as a PLC programmer reads it."""
        return [f"coil {i}: {p.app}.{p.field}" for i, p in enumerate(self.bits)] + [
            f"registers {2 * i}-{2 * i + 1}: {p.app}.{p.field} (uint32, high word first)"
            for i, p in enumerate(self.words)
        ]

    def write(self, record: msgspec.Struct) -> None:
        self.state.apply(record)

    def flush(self, timeout: float = 0.0) -> bool:
        return True

    def close(self) -> None:
        if self._server is not None and not self._loop.closed:
            try:
                self._loop.run(self._server.shutdown(), 5)
            except (RuntimeError, TimeoutError):
                log.debug("modbus server shutdown", exc_info=True)
        self._loop.stop()
