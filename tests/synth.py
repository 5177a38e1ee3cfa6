"""Synthetic screens and audio for stage tests: small, exact, made in the test."""
from __future__ import annotations

import numpy as np

W, H = 320, 200


def screen(value: int = 235) -> np.ndarray:
    """A light, static 'desktop'."""
    return np.full((H, W), value, np.uint8)


def with_rect(frame: np.ndarray, x: int, y: int, w: int, h: int, value: int = 20) -> np.ndarray:
    out = frame.copy()
    out[y:y + h, x:x + w] = value
    return out


def tone(seconds: float, rate: int = 16000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def hush(seconds: float, rate: int = 16000, amp: float = 0.002, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal(int(seconds * rate))).astype(np.float32)
