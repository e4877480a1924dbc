"""iMiGUE raw release files that the runtime reads too (torch-free).

``<video>_label.csv``: one row per gesture, ``gestureID,start,end``; class ids
1..31, with 99 for the last class (31, "illustrative hand gestures"); frames
0-based and inclusive (the organisers' access script adds 1 for its 1-based
reader; a gesture may start at frame 0). Some copies carry a header row.
"""

from __future__ import annotations

import csv
from pathlib import Path

from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import imigue_class_from_raw


def read_label_csv(path) -> list[tuple[int, int, int]]:
    """``(class_id, start_frame, end_frame)`` per row of an iMiGUE ``<video>_label.csv``.

    ``class_id`` is 0-based (1..31 -> 0..30, 99 -> 31); ``start_frame`` and
    ``end_frame`` are the file's numbers: 0-based, ``end_frame`` inclusive. A
    header row is skipped; a malformed row is an error naming ``file:line``.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [(n, [v.strip() for v in fields]) for n, fields in enumerate(csv.reader(f), start=1)]
    except OSError as e:
        raise MicrogestureError(f"cannot read the iMiGUE label file {path}: {e.strerror}.") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise MicrogestureError(f"{path} is not a readable CSV file ({e}); expected iMiGUE labels "
                                "gestureID,start,end.") from None
    out: list[tuple[int, int, int]] = []
    for k, (n, fields) in enumerate(r for r in rows if any(r[1])):
        while fields and not fields[-1]:
            fields.pop()
        try:
            values = [int(v) for v in fields]
        except ValueError:
            if k == 0:
                continue  # a header row
            raise MicrogestureError(f"{path}:{n}: expected three integers gestureID,start,end, "
                                    f"got {','.join(fields)!r}.") from None
        if len(values) != 3:
            raise MicrogestureError(f"{path}:{n}: {len(values)} values; an iMiGUE label row is "
                                    "gestureID,start,end.")
        raw, start, end = values
        try:
            class_id = imigue_class_from_raw(raw)
        except MicrogestureError as e:
            raise MicrogestureError(f"{path}:{n}: {e}") from None
        if start < 0:
            raise MicrogestureError(f"{path}:{n}: start frame {start} is negative; iMiGUE frames are "
                                    "0-based.")
        if start > end:
            raise MicrogestureError(f"{path}:{n}: start frame {start} is after end frame {end}.")
        out.append((class_id, start, end))
    return out
