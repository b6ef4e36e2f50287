"""Character tokenizer for CTC training: text -> label indices and back.

Training text is lowercased and every character outside the alphabet is dropped
(docs/nemo_compatibility.md §1). Dropping is never silent: the tokenizer counts each dropped character so
datasets can report them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from quartznet.common.errors import ConfigError

_WHITESPACE = re.compile(r"\s+")


class CharTokenizer:
    """Maps text to indices of `labels` (one label per character); the CTC blank is `len(labels)`.

    `encode` lowercases (when `lowercase`), turns any run of whitespace into one space (when " " is a
    label, so "a\\tb" stays two words instead of becoming "ab"), drops characters that are not labels
    and counts them in `dropped`.
    """

    def __init__(self, labels: Sequence[str], lowercase: bool = True):
        labels = list(labels)
        if any(len(label) != 1 for label in labels):
            raise ConfigError(f"CharTokenizer needs single-character labels, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"labels contain duplicates: {labels!r}")
        self.labels = labels
        self.lowercase = lowercase
        self.blank_id = len(labels)
        self._index = {label: i for i, label in enumerate(labels)}
        self._spaces = " " in self._index
        self.dropped: Counter[str] = Counter()

    def normalize(self, text: str) -> str:
        """The text as it is trained on: lowercased, whitespace collapsed, unknown characters removed."""
        if self.lowercase:
            text = text.lower()
        if self._spaces:
            text = _WHITESPACE.sub(" ", text)
        kept = []
        for char in text:
            if char in self._index:
                kept.append(char)
            else:
                self.dropped[char] += 1
        text = "".join(kept)
        if self._spaces:
            # Dropping "-" from "a - b" leaves two spaces; collapse again and trim the ends.
            text = _WHITESPACE.sub(" ", text).strip()
        return text

    def encode(self, text: str) -> list[int]:
        return [self._index[char] for char in self.normalize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        chars = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.labels):
                raise ValueError(f"token id {i} is not a label index (0..{len(self.labels) - 1}; blank is {self.blank_id})")
            chars.append(self.labels[i])
        return "".join(chars)

    def dropped_summary(self) -> str:
        """'N characters outside the alphabet dropped: {...}' (most frequent first), or '' if none."""
        if not self.dropped:
            return ""
        total = sum(self.dropped.values())
        return f"{total} characters outside the alphabet dropped: {dict(self.dropped.most_common())}"
