"""The example record every stage shares, and the result of encoding one text or conversation.

Records before tokenization are plain dicts:
  lm:   {"id": str, "task": str, "text": str}
  chat: {"id": str, "task": str, "messages": [{"role": str, "content": str}, ...]}
where "task" is the fine-tuning task or, for upstream text, the source label.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Token ids and the mask of scored/trained tokens of one text or conversation.

    mask[t] says token t is scored, i.e. predicted from tokens < t (mask[0] is always False).
    """

    ids: np.ndarray  # int32 [T]
    mask: np.ndarray  # bool [T]
    num_truncated: int = 0  # tokens dropped to fit max_length

    @property
    def num_scored(self) -> int:
        return int(self.mask.sum())


@dataclasses.dataclass(frozen=True)
class Example:
    """One upstream or task example, tokenized: the unit of the forgetting matrix."""

    id: str
    task: str  # fine-tuning task, or the source label of upstream text
    ids: np.ndarray  # int32 [T]
    mask: np.ndarray  # bool [T]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids_T, mask_T), the form `packing` takes."""
        return self.ids, self.mask


def record_format(record: dict) -> str:
    """'lm' for a text record, 'chat' for a conversation."""
    return "chat" if "messages" in record else "lm"
