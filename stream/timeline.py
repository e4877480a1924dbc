"""A PNG timeline of one long video: ground truth against detections, one lane per class.

Drawn with OpenCV (a runtime dependency), so ``eval-online`` needs no plotting
package. In each class's lane the ground truth is the upper bar (green when a
detection matched it, grey when missed) and the detections the lower bar (blue
for true positives, red for false positives; a tick marks where the gesture was
announced). Detections dropped for being too short are drawn hatched in grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microgesture.core.online_metric import VideoMatch

_GREEN, _GREY, _BLUE, _RED, _BLACK, _LIGHT = ((60, 160, 60), (170, 170, 170), (200, 110, 30), (50, 50, 210),
                                              (30, 30, 30), (235, 235, 235))


def draw_timeline(m: VideoMatch, path, title: str = "", frames: int | None = None, width: int = 1400) -> Path:
    """Write the timeline of one video's match (:func:`core.online_metric.match_video`) to
    ``path``; ``frames``: the video's length (default: up to the last interval)."""
    import cv2

    items = list(m.truth) + list(m.kept) + list(m.dropped)
    labels = sorted({i.label for i in items}) or ["(no gesture)"]
    end = max([i.end + 1 for i in items] + [frames or 1])
    left, right, top, lane = 300, 20, 44, 34
    height = top + lane * len(labels) + 40
    img = np.full((height, width, 3), 255, np.uint8)
    span = width - left - right
    x = lambda frame: left + int(round(frame / end * span))  # noqa: E731
    font = cv2.FONT_HERSHEY_SIMPLEX
    fps = m.fps or 0
    cv2.putText(img, f"{title}  TP {m.tp}, detections {len(m.kept)}, ground truth {len(m.truth)}",
                (8, 22), font, 0.55, _BLACK, 1, cv2.LINE_AA)
    legend = [("truth found", _GREEN), ("truth missed", _GREY), ("true positive", _BLUE),
              ("false positive", _RED)]
    lx = width - 560
    for text, colour in legend:
        cv2.rectangle(img, (lx, 12), (lx + 18, 22), colour, -1)
        cv2.putText(img, text, (lx + 22, 22), font, 0.4, _BLACK, 1, cv2.LINE_AA)
        lx += 135
    matched_truth, matched_det = m.matched_truth(), m.matched_detections()
    for row, label in enumerate(labels):
        y = top + row * lane
        if row % 2:
            cv2.rectangle(img, (0, y), (width, y + lane - 1), _LIGHT, -1)
        cv2.putText(img, label[:38], (8, y + 21), font, 0.45, _BLACK, 1, cv2.LINE_AA)
        for j, gt in enumerate(m.truth):
            if gt.label == label:
                cv2.rectangle(img, (x(gt.start), y + 4), (x(gt.end + 1), y + 15),
                              _GREEN if j in matched_truth else _GREY, -1)
        for i, det in enumerate(m.kept):
            if det.label == label:
                cv2.rectangle(img, (x(det.start), y + 18), (x(det.end + 1), y + 29),
                              _BLUE if i in matched_det else _RED, -1)
                if det.announced is not None:
                    cv2.line(img, (x(det.announced), y + 16), (x(det.announced), y + 31), _BLACK, 2)
        for det in m.dropped:
            if det.label == label:
                x0, x1 = x(det.start), x(det.end + 1)
                cv2.rectangle(img, (x0, y + 18), (x1, y + 29), _GREY, 1)
                for hx in range(x0, x1, 4):
                    cv2.line(img, (hx, y + 29), (min(x1, hx + 6), y + 18), _GREY, 1)
    axis = top + lane * len(labels) + 6
    cv2.line(img, (left, axis), (width - right, axis), _BLACK, 1)
    step = _tick_step(end / fps if fps else end)
    t = 0.0
    while t * (fps or 1) <= end:
        frame = t * (fps or 1)
        cv2.line(img, (x(frame), axis), (x(frame), axis + 5), _BLACK, 1)
        cv2.putText(img, f"{t:g}{'s' if fps else ''}", (x(frame) - 8, axis + 20), font, 0.4, _BLACK, 1, cv2.LINE_AA)
        t += step
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        from microgesture.core.errors import MicrogestureError
        raise MicrogestureError(f"cannot write {path}; choose a writable --out folder")
    return path


def _tick_step(total: float) -> float:
    for step in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if total / step <= 15:
            return float(step)
    return 7200.0
