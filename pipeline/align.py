"""Align stage: sentences into narration blocks, measured against the audio itself.

One step's narration is spoken in one breath group; between steps the narrator
stops while acting or waiting. Whisper's word times are good to a few tenths of
a second but tend to cut words short, which inflates pauses, so the pause
between two sentences is measured on the audio energy instead: the longest
silent run around the gap whisper reports. A pause of at least BLOCK_PAUSE_S
starts a new block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .model import Sentence

BLOCK_PAUSE_S = 0.8
HOP_S = 0.01
SEARCH_MARGIN_S = 0.4


@dataclass(frozen=True)
class NarrationBlock:
    """Sentences spoken without a long pause: the narration of one step."""

    sentences: tuple[Sentence, ...]
    onset_s: float | None = None  # when the voice really starts, from the audio energy

    @property
    def start_s(self) -> float:
        return self.sentences[0].start_s

    @property
    def heard_s(self) -> float:
        """When the narration is first heard: the audio onset, else whisper's first word."""
        return self.onset_s if self.onset_s is not None else self.start_s

    @property
    def end_s(self) -> float:
        return self.sentences[-1].end_s


class SilenceMap:
    """Which 10 ms hops of the narration are silent, from the audio energy."""

    def __init__(self, audio: np.ndarray, rate: int = 16000):
        hop = int(rate * HOP_S)
        n = len(audio) // hop
        if n == 0:
            self.silent = np.ones(0, bool)
            return
        scale = 1.0 / 32768.0 if np.issubdtype(audio.dtype, np.integer) else 1.0  # int16 PCM or float
        block = 6000  # hops (60 s) at a time: no float64 copy of a whole long narration
        rms = np.concatenate([
            np.sqrt(np.mean(np.square(np.asarray(audio[i * hop:min(n, i + block) * hop], np.float64) * scale)
                            .reshape(-1, hop), axis=1) + 1e-12)
            for i in range(0, n, block)])
        floor = float(np.percentile(rms, 10))
        loud = float(np.percentile(rms, 99))
        threshold = max(floor * 3.0, floor + 0.05 * (loud - floor), 1e-4)
        self.silent = rms <= threshold

    def onset(self, start_s: float, reach_s: float = 0.6) -> float:
        """Start of the sound run that whisper's word start falls in (or just after),
        searched at most reach_s back: whisper tends to place first words late."""
        i = min(len(self.silent) - 1, int(start_s / HOP_S))
        if i < 0:
            return start_s
        limit = max(0, i - int(reach_s / HOP_S))
        if self.silent[i]:  # word start in silence: the voice starts after it
            return start_s
        while i > limit and not self.silent[i - 1]:
            i -= 1
        return round(i * HOP_S, 3)

    def longest_pause(self, start_s: float, end_s: float) -> float:
        """Longest silent run, in seconds, inside [start_s, end_s]."""
        a = max(0, int(start_s / HOP_S))
        b = min(len(self.silent), int(np.ceil(end_s / HOP_S)))
        if b <= a:
            return max(0.0, end_s - start_s)
        best = run = 0
        for silent in self.silent[a:b]:
            run = run + 1 if silent else 0
            best = max(best, run)
        return best * HOP_S


def group_sentences(sentences: Sequence[Sentence], silence: SilenceMap | None,
                    pause_s: float = BLOCK_PAUSE_S) -> list[NarrationBlock]:
    """Split the transcript into blocks at long pauses."""
    blocks: list[list[Sentence]] = []
    for sentence in sentences:
        if blocks:
            prev = blocks[-1][-1]
            if silence is not None:
                gap = silence.longest_pause(prev.end_s - SEARCH_MARGIN_S, sentence.start_s + SEARCH_MARGIN_S)
            else:
                gap = sentence.start_s - prev.end_s
            if gap < pause_s:
                blocks[-1].append(sentence)
                continue
        blocks.append([sentence])
    return [NarrationBlock(tuple(b), silence.onset(b[0].start_s) if silence is not None else None) for b in blocks]
