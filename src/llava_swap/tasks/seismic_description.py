"""Seismic text description: an offline stand-in for the study's task of describing a seismogram in words.

Each image is a seismic record drawn black on white: 1-4 horizontal traces (components of one station) over a
0-10 s time axis across the full width, with light tick marks every second along the bottom (longer at 0, 5 and
10 s) so that times can be read off. Every trace shows background noise, a P arrival and a later, larger S arrival.
The event's amplitude class (low/medium/high: the drawn height of the S wave in its trace's band) and frequency
class (low: slow, visible swings; high: dense oscillation that fills an envelope) are visible in the pixels. The
reference description states every fact in one fixed phrasing, so a metric can compare text or pull facts back out.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ._common import CAPTION_PROMPT, WHITE, Item, generate_task, numpy_rng

NAME = "seismic_description"
PROMPT = "Describe the seismic event in this image."
PROMPTS = (PROMPT,)
DURATION_S = 10.0
AMPLITUDE_CLASSES = {"low": 0.3, "medium": 0.6, "high": 0.95}  # S-wave peak, as a share of a trace's half-band
FREQUENCY_CLASSES = {"low": 0.8, "high": 3.0}  # P-wave frequency in Hz; the S wave is a little slower
P_RANGE_S = (1.0, 4.0)
S_MINUS_P_RANGE_S = (1.5, 4.0)  # so the S wave arrives by 8 s and its coda stays on the record
OVERSAMPLE = 8  # signal samples per pixel column: dense oscillation is drawn as its envelope, never aliased
NOISE = 0.02
P_RATIO = 0.5  # the P wave's peak as a share of the S wave's  # noise standard deviation, as a share of the half-band
TICK_GREY = (170, 170, 170)


def references(meta: dict) -> str:
    """The reference description a generated description is compared against."""
    return meta["reference"]


def describe(facts: dict) -> str:
    """The reference text: 'The record shows 3 traces. The P wave arrives at 2.4 s and the S wave at 5.1 s. ...'"""
    traces = f"{facts['num_traces']} trace{'' if facts['num_traces'] == 1 else 's'}"
    return (
        f"The record shows {traces}. The P wave arrives at {facts['p_arrival_s']:.1f} s and the S wave at "
        f"{facts['s_arrival_s']:.1f} s. The event has {facts['amplitude_class']} amplitude and "
        f"{facts['frequency_class']}-frequency content."
    )


def caption(facts: dict) -> str:
    """The pretraining caption: 'A seismogram with 3 traces and a high-amplitude event.'"""
    traces = f"{facts['num_traces']} trace{'' if facts['num_traces'] == 1 else 's'}"
    return f"A seismogram with {traces} and a {facts['amplitude_class']}-amplitude event."


def _facts(rng: random.Random) -> dict:
    # Tenths of a second drawn as integers, so the stored values are exact one-decimal numbers.
    p = rng.randint(round(P_RANGE_S[0] * 10), round(P_RANGE_S[1] * 10)) / 10
    gap = rng.randint(round(S_MINUS_P_RANGE_S[0] * 10), round(S_MINUS_P_RANGE_S[1] * 10)) / 10
    return {
        "num_traces": rng.randint(1, 4),
        "p_arrival_s": p,
        "s_arrival_s": round(p + gap, 1),
        "amplitude_class": rng.choice(sorted(AMPLITUDE_CLASSES)),
        "frequency_class": rng.choice(sorted(FREQUENCY_CLASSES)),
    }


def _packet(t: np.ndarray, onset: float, frequency: float, decay_s: float) -> np.ndarray:
    """A wave packet with a sharp first motion at `onset` and an exponential coda; zero before the onset."""
    dt = np.maximum(t - onset, 0.0)
    envelope = (1.0 - np.exp(-dt / 0.05)) * np.exp(-dt / decay_s)
    return np.where(t >= onset, envelope * np.cos(2 * math.pi * frequency * dt), 0.0)


def _draw(rng: random.Random, facts: dict, image_size: int) -> Image.Image:
    width = height = image_size
    pixels = np.full((height, width, 3), WHITE, dtype=np.uint8)
    tick_height = max(3, image_size // 12)
    for second in range(int(DURATION_S) + 1):
        x = min(width - 1, round(second * width / DURATION_S))
        length = tick_height if second % 5 == 0 else max(1, tick_height // 2)
        pixels[height - length :, x] = TICK_GREY
    band = (height - tick_height) / facts["num_traces"]
    half = band / 2 - 1  # the largest drawn excursion keeps one pixel between neighbouring traces
    noise = numpy_rng(rng)
    t = (np.arange(width * OVERSAMPLE) + 0.5) * DURATION_S / (width * OVERSAMPLE)
    peak = AMPLITUDE_CLASSES[facts["amplitude_class"]]
    for trace in range(facts["num_traces"]):
        frequency = FREQUENCY_CLASSES[facts["frequency_class"]] * rng.uniform(0.85, 1.15)
        gain = peak * rng.uniform(0.85, 1.0)
        signal = (
            P_RATIO * gain * _packet(t, facts["p_arrival_s"], frequency, 1.2)
            + gain * _packet(t, facts["s_arrival_s"], 0.75 * frequency, 2.0)
            + noise.normal(0.0, NOISE, t.shape)
        )
        centre = band * trace + band / 2
        rows = np.rint(centre - half * np.clip(signal, -1.0, 1.0)).astype(int).reshape(width, OVERSAMPLE)
        previous = rows[0, 0]
        for x in range(width):
            # A vertical run per column from the lowest to the highest sample, joined to the previous column: a
            # continuous line where the wave is slow, a filled envelope where it oscillates faster than the pixels.
            top, bottom = min(rows[x].min(), previous), max(rows[x].max(), previous)
            pixels[max(0, top) : min(height - tick_height, bottom + 1), x] = 0
            previous = rows[x, -1]
    return Image.fromarray(pixels, "RGB")


def _items(rng: random.Random, count: int, image_size: int) -> Iterator[Item]:
    for _ in range(count):
        facts = _facts(rng)
        reference = describe(facts)
        meta = {"question_type": "description", "facts": facts, "reference": reference, "answer": reference}
        yield Item(_draw(rng, facts, image_size), PROMPT, reference, meta, caption(facts))


def generate(
    out_dir: str | os.PathLike,
    n_train: int = 1000,
    n_val: int = 100,
    n_test: int = 200,
    seed: int = 0,
    image_size: int = 64,
) -> dict[str, Path]:
    """Writes the seismic description task under `out_dir` (images/, four LLaVA JSON files, task.json).

    Records carry "question_type" ("description"), "facts" (num_traces, p_arrival_s, s_arrival_s,
    amplitude_class, frequency_class), "reference" and "answer" (both the reference description).
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    return generate_task(NAME, out_dir, counts, seed, image_size, _items)


__all__ = [
    "AMPLITUDE_CLASSES",
    "CAPTION_PROMPT",
    "DURATION_S",
    "FREQUENCY_CLASSES",
    "NAME",
    "PROMPT",
    "PROMPTS",
    "caption",
    "describe",
    "generate",
    "references",
]
