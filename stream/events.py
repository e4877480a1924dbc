"""Gesture events: smoothing window scores, the JSON wire format, the ZeroMQ publisher.

Three parts, each usable alone:

- :class:`GestureSmoother` (pure logic, no clock of its own) turns the class
  probabilities of successive windows into :class:`GestureEvent` records with a
  phase ``start``, ``update`` or ``end``.
- The wire format: one versioned JSON object per event, described by the JSON
  Schema (draft 2020-12) ``stream/event.schema.json`` beside this file
  (:data:`SCHEMA_PATH`, :func:`load_schema`; the tests validate with ``jsonschema``).
- :class:`EventPublisher`: a ZeroMQ PUB socket that never blocks inference, with
  an optional JSONL log and heartbeats.

Smoothing
---------
The smoothed score of a class is the plain mean of its probability over the last
``window`` windows (fewer at the start of a stream or after :meth:`flush`). A
moving average rather than an exponential one: a window older than ``window``
has no influence at all, so the end of a gesture is seen within a known number
of windows, and the same settings mean the same lag at any score.

The time of a window is the capture time of its last frame (monotonic ns): the
moment all its evidence existed. For one gesture:

- it becomes a *candidate* at the first window where its class is the top
  smoothed class and its smoothed score is above ``start_threshold``; that
  window's time is the gesture's ``start_ns``;
- ``start`` is published at the first window where the candidate has lasted
  ``min_duration_s`` (``time - start_ns >= min_duration_s``); with
  ``min_duration_s=0`` that is the first window. The event carries the true
  ``start_ns``, so only the publication is late. A candidate that ends sooner is
  suppressed: no event at all (counted in ``suppressed``);
- while active, an ``update`` every ``update_every`` windows after the start,
  with the current smoothed score (0 turns updates off);
- ``end`` at the first window where its smoothed score falls below
  ``end_threshold`` (reason ``below_threshold``), or where another class is the
  top class above ``start_threshold`` (reason ``takeover``, which wins when both
  hold: the old gesture's ``end`` comes first, then the new class becomes a
  candidate in the same window), or at :meth:`GestureSmoother.flush` (reason
  ``flush``). ``end_ns`` is the time of that window (of the last window seen,
  for a flush).

Where the gesture was. A window covers the last few seconds, so a gesture is
announced well after it began. Each event therefore also carries the interval
of video it describes (:class:`VideoInterval`), from the windows that voted for
it: a window votes when its own (unsmoothed) score for the class is at least
``end_threshold``; the votes are the windows averaged when the candidate
appeared and every window after it while the gesture holds (not the one that
ends it). A window stands for the moment ``interval_anchor`` (0.5: its middle)
of the way through its span; the interval runs from the first voter's moment to
the last one's, in frame ids and capture times. ``start`` and ``update`` carry the
interval so far, ``end`` the final one. A window is positive once the gesture
fills a good part of it, so its middle, not its last frame, is the better guess
of when the movement happened; online evaluation (``microgesture eval-online``)
scores these intervals.

Hysteresis: between the two thresholds nothing changes, so a score hovering
around ``start_threshold`` cannot make a gesture flap. A ``background`` class
(a "no gesture" label) never produces events but takes over like any class.

Wire format
-----------
Every message is two ZeroMQ frames: the topic ``<type>.<stream id>`` (UTF-8) and
the event as compact UTF-8 JSON. Subscribe to ``gesture.`` for every stream's
gestures, ``gesture.cam0`` for one stream (the topic frame is the whole first
frame: compare it exactly, ZeroMQ only matches prefixes, so ``gesture.cam1``
also matches ``gesture.cam10``). Fields common to every type:

``schema`` (``"microgesture.event/1"``; a new major number means an incompatible
change, new fields may be added without one: ignore the ones you do not know),
``type`` (``gesture``, ``heartbeat``, ``source``, ``window``), ``stream``,
``seq`` (per stream, across all types, from 0: a gap means lost messages),
``type_seq`` (per stream and type, from 0: what a subscriber to some types only
checks for gaps), ``time_ns`` (publish time, monotonic ns of the publishing
machine), ``time`` (the same instant, wall clock, ISO 8601 UTC, for humans).

Monotonic times (``*_ns``) compare with each other on the publishing machine
only; latencies are differences of monotonic times, never of wall clocks.

``gesture`` adds ``phase``, ``gesture_id`` (per stream; the same for the start,
updates and end of one gesture), ``label``, ``class_id``, ``score`` (smoothed),
``top_k`` (``[[label, score], ...]``, smoothed, best first), ``start_ns`` /
``start_time``, ``end_ns`` / ``end_time`` (null until the end), ``duration_ms``
(so far, for start and update), ``reason`` (end only), ``window`` (the window
that produced the event: ``index``, ``first_frame``, ``last_frame``,
``frame_ids`` (RGB-sampled), ``pose_frame_ids``, ``first_capture_ns``,
``last_capture_ns``, ``first_capture``, ``last_capture``), ``latency_ms``
(stage -> ms as the pipeline measured them, plus ``total`` = publish time - last
frame's capture time), ``model``, ``paced`` and ``interval`` (the part of the
video the gesture occupied, see above: ``first_frame``, ``last_frame``,
``first_capture_ns``, ``last_capture_ns``, ``first_capture``, ``last_capture``,
``windows``; null if unknown). ``paced`` is false for a file streamed faster than
its frame rate: its capture times are then the video's own time (frame / fps from
the moment it was opened), not when the frame was read, so ``latency_ms.total``
says how far ahead of (negative) or behind the video's clock the pipeline ran,
not how long a camera user waits. Example (``start``)::

    {"schema": "microgesture.event/1", "type": "gesture", "stream": "cam0",
     "seq": 12, "type_seq": 3, "time_ns": 5123456789012,
     "time": "2025-06-01T10:15:02.512345Z", "phase": "start", "gesture_id": 1,
     "label": "touching jaw", "class_id": 10, "score": 0.8123,
     "top_k": [["touching jaw", 0.8123], ["touching or scratching neck", 0.0712]],
     "start_ns": 5123100000000, "start_time": "2025-06-01T10:15:02.155556Z",
     "end_ns": null, "end_time": null, "duration_ms": 266.667, "reason": null,
     "window": {"index": 40, "first_frame": 129, "last_frame": 160,
                "frame_ids": [131, 135, 139, 143, 147, 151, 155, 159],
                "pose_frame_ids": [129, 130, "...", 160],
                "first_capture_ns": 5122333333333, "last_capture_ns": 5123366666667,
                "first_capture": "2025-06-01T10:15:01.388889Z",
                "last_capture": "2025-06-01T10:15:02.422222Z"},
     "latency_ms": {"pose": 11.8, "heatmaps": 0.7, "tokens": 38.2, "window": 61.3,
                    "total": 90.122},
     "model": "clip-mg-b16-int8"}

``heartbeat`` (every ``heartbeat_s`` per registered stream) adds ``interval_s``,
``uptime_s``, ``stats`` (what the pipeline reports; by convention ``fps``,
``frames_captured``, ``frames_dropped``, ``windows_run``, ``windows_skipped``,
``queue_depths`` {queue: depth}; non-finite numbers become null), ``publisher``
(``sent``, ``dropped``, ``logged`` counts, and ``log_error`` once a failing
JSONL log was turned off) and, if the stats callback failed,
``stats_error``. A stream whose heartbeats stop for a few intervals is gone.

``source`` adds ``status`` (``connecting``, ``connected``, ``lost``,
``reconnecting``, ``reconnected``, ``size_changed``, ``ended``, ``stopped``),
``detail`` (free text), ``source`` (the URL or path, with any ``user:password@``
replaced by ``***@``), ``attempt`` (reconnect attempt), ``size`` and
``previous_size`` (``[width, height]``); null when unknown.

``window`` (off unless the pipeline publishes it) adds ``window``, ``scores``
(the raw probabilities, one per class id), ``top_k``, ``latency_ms``, ``model``, ``paced``.

Publisher
---------
Binds a PUB socket to loopback unless ``allow_remote=True``; beyond the machine,
``curve_secret_key`` and ``curve_clients`` encrypt every event with CurveZMQ and
admit only the subscribers whose public keys are in the clients folder
(:mod:`stream.curve`); without them remote publishing is plain text and warned
about. IPv6 addresses (``tcp://[::1]:5555``) work. Sends never block: ``zmq.NOBLOCK`` and a send high-water mark
``hwm`` per subscriber; a subscriber that cannot keep up loses messages (ZeroMQ
drops them for that subscriber alone) and sees the gap in ``seq``. A send the
socket refuses is counted in ``dropped``. With ``log_path`` every event is first
appended to a JSONL file with one unbuffered ``write`` per line, so it is on disk
(in the OS cache) before it is sent and a crash of the process never loses a
recorded event; ``log_fsync=True`` also survives a power cut, at a cost per event.

Heartbeats: :meth:`EventPublisher.start_heartbeats` registers a stream and a
stats callable; one timer thread publishes a heartbeat for each registered
stream every ``heartbeat_s`` seconds, so heartbeats keep coming (and their stats
show the stall) while the pipeline's loop waits on a reconnecting source. A pipeline that prefers
to drive them can call :meth:`EventPublisher.publish_heartbeat` itself. The
publisher is thread-safe (one lock around the socket, sequence numbers and log).

Use::

    smoother = GestureSmoother(labels, window=4, min_duration_s=0.25)
    with EventPublisher("tcp://127.0.0.1:5555", log_path="events.jsonl") as pub:
        pub.start_heartbeats("cam0", pipeline_stats)    # a callable returning a dict
        pub.publish_source("cam0", "connected", "640x480 at 30 fps", source=url)
        for probs, info in windows:                     # info: a WindowInfo
            for event in smoother.feed(probs, info):
                pub.publish(event)
        for event in smoother.flush():
            pub.publish(event)
        pub.publish_source("cam0", "ended", "end of file")
"""

from microgesture.stream.event_schema import SCHEMA_PATH, load_schema  # noqa: F401
from microgesture.stream.publisher import (DEFAULT_ADDRESS, EventPublisher,  # noqa: F401
                                           check_bind_address)
from microgesture.stream.records import (END_REASONS, EVENT_TYPES, PHASES, SCHEMA,  # noqa: F401
                                         SOURCE_STATUSES, GestureEvent, VideoInterval, WindowInfo,
                                         check_stream_id, wall_time)
from microgesture.stream.smoothing import GestureSmoother  # noqa: F401
