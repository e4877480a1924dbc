"""Live and recorded video sources for streaming: cameras, RTSP/HTTP streams, video files
and image folders, read in a thread of their own into a bounded buffer.

``open_source(spec)`` connects (the first frame is read before it returns, so a wrong
path, URL or camera fails at once with a :class:`MicrogestureError`) and starts the
capture thread. The consumer iterates over it (or calls ``get(timeout)``) for
:class:`Frame` objects::

    with open_source("rtsp://user:pass@camera/stream", stream_id="door") as source:
        for frame in source:
            ...  # frame.image: RGB uint8 (H, W, 3); frame.capture_ns: time.monotonic_ns()

Source kinds (from the spec): a camera index (``0``, or a ``/dev/video*`` device), a
network URL (``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://``, ``https://``), a video
file, an image folder (natural order) or a single image.

Buffering: frames go into a bounded buffer with a named :class:`BufferPolicy`. Live
sources default to ``DROP_OLDEST`` (latency stays bounded: the consumer always gets the
newest frames), files to ``WAIT`` (the reader waits for the consumer; nothing is lost).
``realtime=True`` paces a file at its own frame rate, like a camera (then
``DROP_OLDEST``). Every frame that does not reach the consumer is counted with its
cause in ``stats().dropped``: ``buffer_full`` (the policy dropped it), ``read_failed``
(the capture could not decode it: a gap), ``stale`` (frames FFmpeg had buffered while
a live stream was being opened, skipped to catch up with the live edge), ``truncated``
(a file ended before the frame count in its header) and ``stopped`` (discarded by
``stop()`` while the buffer was full).

Gaps: a failed read never produces a frame (and never a black image); the frame ids and
capture times of the next frames show the gap. Frame ids are the decoded-frame index for
files and folders (a failed read keeps its number), and a per-stream counter of read
attempts for live sources (a failed read takes a number too; ids keep counting across
reconnects).

Timestamps: ``capture_ns`` is ``clock.monotonic_ns()`` when the frame was read, for
live sources and for files replayed with ``realtime=True``. A file read as fast as
the consumer allows gets ``start + frame_index / fps``: when the frame would have been
captured had the file been played from the moment it was opened, so that windows of a
fixed time span hold the right frames. ``read_ns`` is always when the frame entered
the buffer (use it for throughput, ``capture_ns`` for latency). ``wall_time`` is for
display only.

States (:class:`StreamState`): ``CONNECTING -> CONNECTED -> LOST -> RECONNECTING ->
CONNECTED ...``, ending in ``ENDED`` (a file ended, reconnecting was off or gave up)
or ``STOPPED`` (``stop()``). Each change is a :class:`SourceStatus` record, delivered
three ways: to the callbacks (``on_status=`` / :meth:`VideoSource.add_status_callback`,
called in the capture thread; a failing callback is logged and cannot stop the
source), in order with the frames through :meth:`VideoSource.next_item` (``get`` and
iteration skip them), and in :attr:`VideoSource.statuses`. ``SourceStatus.event`` names
the change for publishing: ``connecting``, ``connected``, ``lost``, ``reconnecting``,
``reconnected``, ``size_changed``, ``ended``, ``stopped``.

Reconnecting: a live source that fails ``max_failed_reads`` reads in a row, whose
reads have failed for the stall limit (``stall_s``, default :data:`LIVE_STALL_S`), or
whose read hangs that long (a frozen camera keeps its connection open: reads run on a
:class:`stream.stall.TimedReader`, and a stuck one is abandoned, its frames never
delivered) is LOST; it releases the capture and retries with exponential backoff (:class:`Backoff`: base, factor,
maximum, optional jitter, a maximum number of attempts or forever). After reconnecting
the frame size is checked again: a change is reported in the status (``size``,
``previous_size``, ``event == "reconnected"`` with ``size_changed``); the consumer decides
what to do. A frame of a new size in the middle of a stream is reported the same way
(``event == "size_changed"``). Files and folders never reconnect; they end. Right after
a live source (re)connects, the frames FFmpeg buffered while opening it (about two
seconds of an RTSP stream) are skipped as ``stale`` when the stream's own timestamps show
they were already waiting, so that the first frames delivered are live ones.

Credentials in URLs never appear in logs, errors, reprs or status details: see
:func:`redact`. (OpenCV and FFmpeg print some messages of their own to stderr; those
are outside Python's reach.)

Testing: the opener (``opener(spec) -> capture`` with ``read() -> (ok, bgr)``,
``get(prop)`` and ``release()``, like ``cv2.VideoCapture``) and the clock
(:class:`Clock`: ``monotonic_ns()``, ``sleep(s)``) are injectable; :class:`FakeCapture`,
:class:`FakeOpener` and :class:`FakeClock` script frames, failures, disconnects and time.

Where things live: :mod:`.records` (policies, states, frames, statuses, clocks),
:mod:`.spec` (what a spec is), :mod:`.captures` (the OpenCV opener, image folders),
:mod:`.buffer` (the bounded buffer, backoff), :mod:`.capture_loop` (the capture thread:
connecting, reading, reconnecting, pacing), :mod:`.source` (:class:`VideoSource`,
:func:`open_source`) and :mod:`.fakes` (test stand-ins). Import from this package.
"""

from microgesture.core.redact import redact, redact_text, secrets_of as _secrets_of  # noqa: F401 (re-exported)
from microgesture.stream.sources.buffer import Backoff
from microgesture.stream.sources.captures import (
    CAP_PROP_FPS,
    CAP_PROP_FRAME_COUNT,
    CAP_PROP_FRAME_HEIGHT,
    CAP_PROP_FRAME_WIDTH,
    CAP_PROP_POS_FRAMES,
    CAP_PROP_POS_MSEC,
    ImageFolderCapture,
    OpenCVOpener,
)
from microgesture.stream.sources.fakes import FakeCapture, FakeClock, FakeOpener
from microgesture.stream.sources.records import (
    FILE_BUFFER,
    FILE_MAX_FAILED_READS,
    LIVE_BUFFER,
    LIVE_MAX_FAILED_READS,
    LIVE_STALL_S,
    NETWORK_SCHEMES,
    STATUS_HISTORY,
    BufferPolicy,
    Clock,
    Frame,
    SourceStats,
    SourceStatus,
    StreamState,
    SystemClock,
)
from microgesture.stream.sources.source import StatusCallback, VideoSource, open_source
from microgesture.stream.sources.spec import SourceSpec, default_stream_id, parse_spec

__all__ = [
    "CAP_PROP_FPS", "CAP_PROP_FRAME_COUNT", "CAP_PROP_FRAME_HEIGHT", "CAP_PROP_FRAME_WIDTH",
    "CAP_PROP_POS_FRAMES", "CAP_PROP_POS_MSEC", "FILE_BUFFER", "FILE_MAX_FAILED_READS",
    "LIVE_BUFFER", "LIVE_MAX_FAILED_READS", "LIVE_STALL_S", "NETWORK_SCHEMES", "STATUS_HISTORY",
    "Backoff", "BufferPolicy", "Clock", "FakeCapture", "FakeClock", "FakeOpener", "Frame",
    "ImageFolderCapture", "OpenCVOpener", "SourceSpec", "SourceStats", "SourceStatus",
    "StatusCallback", "StreamState", "SystemClock", "VideoSource", "default_stream_id",
    "open_source", "parse_spec", "redact", "redact_text",
]
