"""The colours of the boxes and labels: one per entity, and black or white text on it, whichever reads better."""

from __future__ import annotations

# Saturated mid-tone colours, told apart easily (after Sasha Trubetskoy's list of distinct colours).
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (240, 50, 230),
    (0, 128, 128),
    (170, 110, 40),
    (70, 240, 240),
    (210, 245, 60),
)


def color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `rgb` (WCAG contrast ratio)."""
    lum = luminance(rgb)
    return (0, 0, 0) if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else (255, 255, 255)


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance, 0 (black) to 1 (white)."""

    def linear(value: int) -> float:
        v = value / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
