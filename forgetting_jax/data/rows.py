"""Reading raw rows from a data file or a dataset name, each tagged with its place in the source.

JSON lines (.jsonl, .ndjson, .json) and CSV/TSV files, each optionally compressed (.gz, .zst),
are read here, record by record, so that a malformed line or invalid UTF-8 is reported with its
line number and never shifts which row is which. A .json file holding one JSON document (an array
of objects, or an object whose `field` is such an array) is read whole. CSV cells are always
strings (never guessed numbers); a file without a header row is read with `columns` naming its
columns. Parquet and Arrow files, and hub dataset names, go through `datasets`.
"""

import csv
import dataclasses
import gzip
import io
import json
import os
from typing import Any, Iterator, Sequence

from forgetting_jax.data.errors import DataError

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")
COMPRESSION_SUFFIXES = (".gz", ".zst")
DATASETS_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One raw record: its 0-based ordinal among records, its place in the file, and its fields.

    `error` is set (and `values` is None) when the record could not even be parsed.
    """

    index: int
    where: str  # "line 7" (1-based, JSON lines), "item 3" (JSON array) or "row 3" (datasets)
    values: dict[str, Any] | None
    error: DataError | None = None


def strip_compression(path: str) -> str:
    """`path` without its compression suffix (.gz or .zst)."""
    for suffix in COMPRESSION_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a corrupt or truncated compressed file raises while it is read."""
    import zstandard

    return (OSError, EOFError, zstandard.ZstdError)


def _open_binary(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True,
                                                                closefd=True)
        except BaseException:
            raw.close()
            raise
        return io.BufferedReader(reader)
    return open(path, "rb")


def _first_char(path: str) -> str:
    """The first non-blank character of a text file ("" if none)."""
    try:
        with _open_binary(path) as f:
            while True:
                block = f.read(4096)
                if not block:
                    return ""
                text = block.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
                if text:
                    return text[0]
    except _read_errors() as err:  # a corrupt or truncated compressed file
        raise DataError(f"cannot be read: {type(err).__name__}: {err}", path=path) from None


def _json_lines(path: str) -> Iterator[Row]:
    try:
        yield from _json_lines_unchecked(path)
    except _read_errors() as err:  # a corrupt or truncated compressed file
        raise DataError(f"cannot be read: {type(err).__name__}: {err}", path=path) from None


def _json_lines_unchecked(path: str) -> Iterator[Row]:
    index = 0
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            where = f"line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Row(index, where, None, DataError(
                    f"invalid UTF-8 at byte {err.start} of the line", path=path, where=where))
                index += 1
                continue
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as err:
                yield Row(index, where, None, DataError(
                    f"malformed JSON ({err.msg} at column {err.colno})", path=path, where=where))
                index += 1
                continue
            if not isinstance(values, dict):
                yield Row(index, where, None, DataError(
                    f"expected a JSON object, got {type(values).__name__}", path=path, where=where))
            else:
                yield Row(index, where, values)
            index += 1


def _json_document(path: str, field: str | None) -> list[Row] | None:
    """Rows of a .json file holding one document; None if it is not one (then it is JSON lines)."""
    with _open_binary(path) as f:
        data = f.read()
    try:
        doc = json.loads(data.decode("utf-8").lstrip("\ufeff"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(doc, dict):
        if field is None or field not in doc:
            return None
        doc = doc[field]
        if not isinstance(doc, list):
            raise DataError(f"expected a list of records, got {type(doc).__name__}", path=path, field=field)
    if not isinstance(doc, list):
        return None
    rows = []
    for i, values in enumerate(doc):
        where = f"item {i}"
        if isinstance(values, dict):
            rows.append(Row(i, where, values))
        else:
            rows.append(Row(i, where, None, DataError(
                f"expected a JSON object, got {type(values).__name__}", path=path, where=where)))
    return rows


def csv_first_row(path: str) -> list[str]:
    """The cells of the first record of a CSV/TSV file (to tell a header row from data)."""
    for _, cells in _csv_records(path):
        return cells
    return []


def _csv_records(path: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the record starts, cells) of each non-blank CSV/TSV record."""
    delimiter = "\t" if strip_compression(path).lower().endswith(".tsv") else ","
    try:
        with _open_binary(path) as f:
            text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
            reader = csv.reader(text, delimiter=delimiter)
            line = 0
            while True:
                start = reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError as err:
                    raise DataError(f"invalid UTF-8 at byte {err.start} of a read block",
                                    path=path, where=f"line {start}") from None
                except csv.Error as err:
                    raise DataError(f"malformed CSV: {err}", path=path, where=f"line {start}") from None
                line = start
                if cells and any(c.strip() for c in cells):
                    yield line, cells
    except _read_errors() as err:
        raise DataError(f"cannot be read: {type(err).__name__}: {err}", path=path) from None


def _csv_rows(path: str, columns: Sequence[str] | None) -> Iterator[Row]:
    """Rows of a CSV/TSV file: its first record names the columns, unless `columns` does."""
    header = list(columns) if columns is not None else None
    index = 0
    for line, cells in _csv_records(path):
        if header is None:
            header = [c.strip() for c in cells]
            continue
        where = f"line {line}"
        if len(cells) != len(header):
            yield Row(index, where, None, DataError(
                f"has {len(cells)} columns, expected {len(header)} ({', '.join(header)})",
                path=path, where=where))
        else:
            yield Row(index, where, dict(zip(header, cells)))
        index += 1


def _datasets_rows(dataset: Any) -> Iterator[Row]:
    for i, values in enumerate(dataset):
        yield Row(i, f"row {i}", dict(values))


def _load_with_datasets(path: str, name: str | None, split: str) -> Any:
    import datasets

    try:
        if os.path.exists(path):
            builder = DATASETS_BUILDERS[os.path.splitext(strip_compression(path))[1].lower()]
            return datasets.load_dataset(builder, data_files=path, split="train")
        return datasets.load_dataset(path, name, split=split)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types; the user needs the file and the cause.
        raise DataError(f"could not be read by datasets: {type(err).__name__}: {err}", path=path) from err


def _looks_like_path(path: str) -> bool:
    suffix = os.path.splitext(strip_compression(path))[1].lower()
    return (path.startswith((".", "/", "~")) or path.count("/") > 1
            or path.endswith(COMPRESSION_SUFFIXES) or suffix in JSON_SUFFIXES
            or suffix in CSV_SUFFIXES or suffix in DATASETS_BUILDERS)


def read_rows(path: str, *, field: str | None = None, name: str | None = None,
              split: str = "train", columns: Sequence[str] | None = None) -> Iterator[Row]:
    """Yields every record of `path` in order, as `Row`s.

    path: a local file (.jsonl/.ndjson/.json/.csv/.tsv, each optionally .gz or .zst; .parquet,
      .arrow) or a dataset name for `datasets.load_dataset(path, name, split=split)` where a
      network or cache exists.
    field: for a .json file holding one object, the key of its list of records (e.g. "examples").
    columns: for a CSV/TSV file without a header row, the names of its columns (its first record
      is then data); a record with another number of cells is a bad row.
    Places: "line N" (1-based physical line where the record starts: JSON lines, CSV), "item N"
    (0-based, JSON array), "row N" (0-based, datasets).
    Raises DataError for a missing or empty file, or one `datasets` cannot read.
    """
    if not os.path.exists(path):
        if _looks_like_path(path):
            raise DataError("no such file", path=path)
        yield from _nonempty(_datasets_rows(_load_with_datasets(path, name, split)), path)
        return
    if os.path.isdir(path):
        raise DataError("is a directory, expected a data file", path=path)
    if os.path.getsize(path) == 0:
        raise DataError("is empty", path=path)
    suffix = os.path.splitext(strip_compression(path))[1].lower()
    if suffix in JSON_SUFFIXES:
        rows = None
        first = _first_char(path)
        if suffix == ".json" and (first == "[" or (first == "{" and field is not None)):
            rows = _json_document(path, field)
            if rows is None and first == "[":
                rows = _json_lines(path)  # reports the malformed line
        yield from _nonempty(iter(rows) if rows is not None else _json_lines(path), path)
        return
    if suffix in CSV_SUFFIXES:
        yield from _nonempty(_csv_rows(path, columns), path)
        return
    if suffix not in DATASETS_BUILDERS:
        raise DataError(f"unknown file type {suffix!r}; use JSON lines, JSON, parquet, csv or arrow",
                        path=path)
    yield from _nonempty(_datasets_rows(_load_with_datasets(path, name, split)), path)


def _nonempty(rows: Iterator[Row], path: str) -> Iterator[Row]:
    empty = True
    for row in rows:
        empty = False
        yield row
    if empty:
        raise DataError("holds no records", path=path)
