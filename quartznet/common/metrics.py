"""Corpus-level error counts for WER / CER (docs/nemo_compatibility.md §7), computed with jiwer.

WER = (substitutions + deletions + insertions) / reference words, summed over the corpus, not averaged
over utterances. Counts (not rates) are what gets summed across batches and DDP ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import jiwer


@dataclass
class ErrorCounts:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_words: int = 0
    char_errors: int = 0
    reference_chars: int = 0

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.reference_words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.reference_chars, 1)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_list(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]


def utterance_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Errors of one utterance; an empty reference makes every hypothesis word an insertion."""
    reference, hypothesis = reference.strip(), hypothesis.strip()
    if not reference:
        return ErrorCounts(insertions=len(hypothesis.split()), char_errors=len(hypothesis))
    if not hypothesis:
        return ErrorCounts(
            deletions=len(reference.split()), reference_words=len(reference.split()),
            char_errors=len(reference), reference_chars=len(reference),
        )
    words = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    return ErrorCounts(
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        reference_words=words.substitutions + words.deletions + words.hits,
        char_errors=chars.substitutions + chars.deletions + chars.insertions,
        reference_chars=chars.substitutions + chars.deletions + chars.hits,
    )


def corpus_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = ErrorCounts()
    for reference, hypothesis in zip(references, hypotheses):
        total = total + utterance_errors(reference, hypothesis)
    return total
