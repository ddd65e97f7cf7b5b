"""Reading and writing .safetensors files with numpy alone (bf16 through ml_dtypes), no torch.

Format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian tensor bytes.
"""

import json
import mmap
import os
import struct

import ml_dtypes
import numpy as np

from forgetting_jax.utils.io import atomic_path

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    """Memory-mapped read access to one .safetensors file: `names()`, `get(name) -> np.ndarray`."""

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "rb")
        try:
            (size,) = struct.unpack("<Q", self._file.read(8))
            if size > os.path.getsize(path) - 8:
                raise SafetensorsError(f"{path}: its header claims {size:,} bytes but the file has "
                                       f"{os.path.getsize(path):,}: truncated or not a safetensors file")
            self.header = json.loads(self._file.read(size))
        except SafetensorsError:
            self._file.close()
            raise
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as err:
            self._file.close()
            raise SafetensorsError(f"{path}: not a safetensors file ({err})") from None
        self.header.pop("__metadata__", None)
        self._start = 8 + size
        problem = _layout_problem(self.header, os.path.getsize(path) - self._start)
        if problem is not None:
            self._file.close()
            raise SafetensorsError(f"{path}: {problem}")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if os.path.getsize(path) else None

    def names(self) -> list[str]:
        return list(self.header)

    def get(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        array = np.frombuffer(self._map, dtype=_DTYPES[info["dtype"]], count=(end - begin) //
                              _DTYPES[info["dtype"]].itemsize, offset=self._start + begin)
        return array.reshape(info["shape"])

    def close(self):
        self._map = None
        self._file.close()


def _layout_problem(header: dict, data_bytes: int) -> str | None:
    """What is wrong with the tensors' byte ranges (past the end of the file: truncated; not the
    size their dtype and shape need), or None."""
    for name, info in header.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            itemsize = _DTYPES[info["dtype"]].itemsize if info["dtype"] in _DTYPES else None
            count = int(np.prod(info["shape"], dtype=np.int64))
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r} has a malformed header entry {info!r}"
        if end > data_bytes:
            return (f"truncated: tensor {name!r} ends at byte {end:,} of the data but the file holds "
                    f"{data_bytes:,} (an interrupted download or copy?)")
        if itemsize is not None and end - begin != count * itemsize:
            return f"tensor {name!r} has {end - begin:,} bytes, not the {count * itemsize:,} its shape needs"
    return None


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` to `path` atomically (names sorted, 8-byte aligned header)."""
    header, offset, arrays = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in _NAMES:
            raise SafetensorsError(f"tensor {name!r}: dtype {array.dtype} cannot be stored")
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * ((-len(blob)) % 8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for array in arrays:
                f.write(array.tobytes())
            f.flush()
            os.fsync(f.fileno())
