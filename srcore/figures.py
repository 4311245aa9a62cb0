"""Side-by-side image panels with labels, and the training stages' sample grid."""

from __future__ import annotations

import numpy as np


def labelled_row(panels: list[np.ndarray], labels: list[str], gap: int = 4,
                 captions: list[str] | None = None) -> np.ndarray:
    """Put same-size uint8 RGB panels side by side, each with its label above it (and its
    caption, if given, below it)."""
    import cv2

    height, width = panels[0].shape[:2]
    band = 22
    below = band if captions else 0
    row = np.full((height + band + below, len(panels) * (width + gap) - gap, 3), 255, np.uint8)
    for i, (panel, label) in enumerate(zip(panels, labels)):
        x = i * (width + gap)
        row[band : band + height, x : x + width] = panel
        cv2.putText(row, label, (x + 2, band - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        if captions and captions[i]:
            cv2.putText(row, captions[i], (x + 2, band + height + band - 7),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return row


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    height, width = img.shape[:2]
    size = min(size, height, width)
    top, left = (height - size) // 2, (width - size) // 2
    return img[top : top + size, left : left + size]


def sample_grid(val_image, scale: int):
    """LQ (nearest, enlarged) | bicubic | SR | GT, on a centre crop of a val image; SR is the
    output its last validation scored (not made again: at the sample run's size that pass cost
    more than the validation of both val images)."""
    from srcore.data.kernels import upscale
    from srcore.metrics import to_uint8

    panels = [to_uint8(upscale(val_image.lq, scale, "nearest")),
              to_uint8(upscale(val_image.lq, scale, "bicubic")), val_image.sr, val_image.gt]
    return labelled_row([center_crop(p, 128) for p in panels], ["LQ", "bicubic", "SR", "GT"])
