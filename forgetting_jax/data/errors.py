"""Errors for bad input data: each names the file, the record's place in it, and the field."""


class DataError(ValueError):
    """A record that cannot become an example.

    Attributes:
      path: the file or dataset name (None while the error is raised inside a field check).
      where: the record's place, e.g. "line 7" (JSON lines, 1-based) or "row 3" (0-based).
      field: the offending field, e.g. "text" or "messages[2].content" (None for whole records).
      reason: what is wrong.
    """

    def __init__(self, reason: str, *, path: str | None = None, where: str | None = None,
                 field: str | None = None, record_id: str | None = None):
        self.reason = reason
        self.path = path
        self.where = where
        self.field = field
        self.record_id = record_id
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [p for p in (self.path, self.where) if p]
        if self.field:
            parts.append(f"field {self.field!r}")
        return (", ".join(parts) + ": " if parts else "") + self.reason

    def located(self, path: str | None, where: str | None, record_id: str | None = None) -> "DataError":
        """A copy of this error with the file and place filled in (kept where already set)."""
        return type(self)(self.reason, path=self.path or path, where=self.where or where,
                          field=self.field, record_id=self.record_id or record_id)


class ResponseTooLongError(DataError):
    """A chat example whose response alone does not fit in max_length tokens."""
