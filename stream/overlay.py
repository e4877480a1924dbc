"""The overlay sink: the skeleton, the current top class and its score (every frame) and
the reported gesture drawn on frames, for ``--show`` and ``--save-video`` (a file browsers
play, ``stream.video_out``). It runs on the dispatcher thread (``stream.dispatch``), which
owns the smoothed scores it shows."""

from __future__ import annotations

import numpy as np

from microgesture.core.layouts import get_layout


class Overlay:
    """A dispatcher sink drawing each frame (``frame(view, frame, kp, sc)``)."""

    name = "overlay"

    def __init__(self, save_video: str | None, show: bool, layout: str, fps: float):
        import cv2

        from microgesture.stream.video_out import check_path

        if save_video:
            check_path(save_video)
        self.cv2, self.show, self.fps = cv2, show, fps
        self.limbs = get_layout(layout).limbs
        self.path = save_video
        self.writer = None

    def frame(self, view, frame, kp: np.ndarray, sc: np.ndarray) -> None:
        cv2 = self.cv2
        image = np.ascontiguousarray(frame.image[:, :, ::-1])
        scale = max(1, image.shape[0] // 240)
        for a, b in self.limbs:
            if sc[a] > 0 and sc[b] > 0:
                cv2.line(image, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]),
                         (0, 255, 255), scale, cv2.LINE_AA)
        for (x, y), s in zip(kp, sc):
            if s > 0:
                cv2.circle(image, (int(x), int(y)), 2 * scale, (0, 128, 255), -1, cv2.LINE_AA)
        from microgesture.stream import video_out

        for row, (text, event) in enumerate(video_out.caption(view)):
            origin = (4, (14 + 16 * row) * scale)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                        (0, 0, 0), 3 * max(1, scale), cv2.LINE_AA)       # outline: readable anywhere
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                        (0, 255, 0) if event else (255, 255, 255), max(1, scale), cv2.LINE_AA)
        if self.path:
            if self.writer is None:
                self.writer = video_out.VideoFile(self.path, self.fps)
            self.writer.write(image)
        if self.show:
            cv2.imshow(f"microgesture {view.stream_id}", image)
            cv2.waitKey(1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.show:
            self.cv2.destroyAllWindows()
