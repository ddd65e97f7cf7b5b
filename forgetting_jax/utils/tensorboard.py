"""TensorBoard event files without TensorFlow: scalar summaries written in TensorBoard's own
format, so `tensorboard --logdir=W` shows every training run's curves.

An event file is a sequence of TFRecords (uint64 length, masked CRC-32C of the length, the
payload, masked CRC-32C of the payload), each payload a serialized `tensorflow.Event` protocol
buffer. Only the fields scalars need are encoded, by hand:

  Event    wall_time (1, double), step (2, int64), file_version (3, string), summary (5, Summary)
  Summary  value (1, repeated Value)
  Value    tag (1, string), simple_value (2, float)

The first record of a file carries file_version "brain.Event:2", as TensorFlow's writer does.
"""

import os
import struct
import time
from typing import Iterable

FILE_VERSION = "brain.Event:2"
PREFIX = "events.out.tfevents"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tf_record(payload: bytes) -> bytes:
    """One TFRecord holding `payload`."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked(crc32c(length))) + payload + struct.pack("<I", _masked(crc32c(payload)))


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 as protobuf encodes negatives
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def scalar_event(step: int, scalars: dict[str, float], wall_time: float | None = None) -> bytes:
    """A serialized Event of `scalars` ({tag: value}) at `step`."""
    values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode("utf-8")) + _field(2, 5) + struct.pack("<f", value))
                      for tag, value in scalars.items())
    event = _field(1, 1) + struct.pack("<d", time.time() if wall_time is None else wall_time)
    event += _field(2, 0) + _varint(int(step))
    return event + _bytes_field(5, values)


def version_event(wall_time: float | None = None) -> bytes:
    return (_field(1, 1) + struct.pack("<d", time.time() if wall_time is None else wall_time)
            + _bytes_field(3, FILE_VERSION.encode()))


class ScalarWriter:
    """Scalars appended to one event file `directory/events.out.tfevents.<name>`; `rewrite`
    starts the file over (atomically) with the given events, as a resumed run's log does."""

    def __init__(self, directory: str, name: str = "0.forgetting_jax"):
        self.path = os.path.join(directory, f"{PREFIX}.{name}")
        self._file = None

    def rewrite(self, events: Iterable[tuple[int, dict[str, float]]]) -> None:
        """The file anew: the version record, then each (step, scalars)."""
        self.close()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = os.path.join(os.path.dirname(self.path), ".tfevents.tmp")  # not an event file's name
        with open(tmp, "wb") as f:
            f.write(tf_record(version_event()))
            for step, scalars in events:
                if scalars:
                    f.write(tf_record(scalar_event(step, scalars)))
        os.replace(tmp, self.path)
        self._file = open(self.path, "ab")

    def add(self, step: int, scalars: dict[str, float]) -> None:
        if self._file is None:
            self.rewrite(())
        if scalars:
            self._file.write(tf_record(scalar_event(step, scalars)))
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
