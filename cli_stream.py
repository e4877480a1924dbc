"""The streaming-side subcommands of ``microgesture``: stream, serve, listen, demo and bench.

Their options and runners; ``microgesture.cli`` registers them. Each runner imports its
implementation lazily, so ``microgesture stream`` never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from microgesture.core.errors import MicrogestureError


# ---------------------------------------------------------------- stream / listen / demo
def _install_stop_signals():
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stop


def run_stream_command(args: argparse.Namespace) -> int:
    from microgesture.stream.pipeline import StreamOptions, run_stream, smoothing_for

    options = StreamOptions(
        bundle=args.bundle, sources=_with_credentials(args, args.source), stream_ids=args.stream_id,
        publish=args.publish, allow_remote=args.allow_remote, pose=args.pose,
        curve_secret_key=args.curve_secret_key, curve_clients=args.curve_clients,
        precision=args.precision, device=args.device, threads=args.threads, hop=args.hop,
        span_s=args.span, realtime=args.realtime, events_log=args.events_log, sampling=args.sampling,
        heartbeat_s=args.heartbeat, publish_windows=args.publish_windows,
        smoothing=smoothing_for(args.bundle, window=args.smooth_windows, start_threshold=args.start_threshold,
                                end_threshold=args.end_threshold, min_duration_s=args.min_duration),
        silence_report_s=args.silence_report,
        max_frames=args.max_frames, save_video=args.save_video, show=args.show,
        triton=args.triton, source_options=_source_options(args))

    def ready(address, workers):
        if not args.quiet:
            print(f"publishing on {address}: microgesture listen --connect {address}",
                  file=sys.stderr, flush=True)

    summary = run_stream(options, stop=_install_stop_signals(), on_ready=ready)
    print(json.dumps(summary, default=str))
    fatal = [s["fatal"] for s in summary["streams"].values() if s.get("fatal")]
    if fatal:
        from microgesture.cli import cli_words   # the shared parser state (imports this module)
        from microgesture.core.redact import redact_text

        print(f"microgesture stream: error: {redact_text(cli_words(str(fatal[0]), 'stream'))}",
              file=sys.stderr)
        return 2
    return 0


def _source_options(args: argparse.Namespace) -> dict:
    """open_source's stall limit and reconnect backoff from --stall-timeout,
    --reconnect-min and --reconnect-max."""
    from microgesture.stream.sources import Backoff

    return {"stall_s": args.stall_timeout,
            "reconnect": Backoff(base_s=args.reconnect_min, max_s=args.reconnect_max)}


def _with_credentials(args: argparse.Namespace, sources: list[str]) -> list[str]:
    """Network sources with the user:password of --credentials-env / --credentials-file
    put in (in memory only: never on the command line, where ps shows it)."""
    from microgesture.core.redact import load_credentials, with_credentials

    userinfo = load_credentials(args.credentials_env, args.credentials_file)
    return [with_credentials(s, userinfo) for s in sources]


def _credentials_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--credentials-env", metavar="VAR",
                   help="environment variable holding user:password for rtsp:// and http(s):// "
                        "sources without credentials in their URL (keeps them out of ps)")
    p.add_argument("--credentials-file", metavar="FILE",
                   help="file whose first line is user:password, for the same (chmod 600 it)")


def _live_source_options(p: argparse.ArgumentParser) -> None:
    _credentials_options(p)
    p.add_argument("--stall-timeout", type=float, default=5.0, metavar="S",
                   help="a live source that sends nothing for S seconds is reported lost and "
                        "reconnected")
    p.add_argument("--reconnect-min", type=float, default=0.5, metavar="S",
                   help="first reconnect delay; doubles per failed attempt")
    p.add_argument("--reconnect-max", type=float, default=30.0, metavar="S",
                   help="longest reconnect delay")


def _stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="exported bundle folder (microgesture export)")
    p.add_argument("--source", action="append", required=True,
                   help="camera index (0), rtsp:// or http:// URL, video file or image folder; "
                        "repeat for several streams")
    p.add_argument("--stream-id", action="append", help="name of each stream (default: derived)")
    p.add_argument("--publish", default="tcp://127.0.0.1:5555",
                   help="ZeroMQ PUB address (loopback unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding to a non-loopback address (encrypt with --curve-secret-key)")
    p.add_argument("--curve-secret-key", metavar="FILE",
                   help="encrypt events with CurveZMQ using this server key pair (NAME.key_secret "
                        "from microgesture keys)")
    p.add_argument("--curve-clients", metavar="DIR",
                   help="with --curve-secret-key: folder of the subscribers' public keys "
                        "(NAME.key); only they receive events")
    p.add_argument("--pose", default="mediapipe",
                   help="mediapipe, mediapipe-pose, tasks:MODEL.task or recorded:FILE.jsonl")
    p.add_argument("--precision", default="auto", help="auto (int8 if the bundle has it), int8, "
                                                        "fp32, fp16, engine")
    p.add_argument("--device", default="cpu", help="cpu, cuda or tensorrt")
    p.add_argument("--threads", type=int, default=1, help="threads per inference session")
    p.add_argument("--hop", type=int, help="frames between windows (default: the bundle's tuned hop "
                                           "from eval-online --tune, else span / RGB frames)")
    p.add_argument("--span", type=float, help="seconds a window covers (default: the bundle's)")
    p.add_argument("--sampling", choices=("frames", "grid"), default="frames",
                   help="grid: windows on a sampling grid fixed in stream time, pose estimated only "
                        "on the frames windows sample (default frames: sampled from the frames there)")
    p.add_argument("--realtime", action="store_true", help="pace a file at its frame rate")
    p.add_argument("--events-log", help="also append every event to this JSONL file")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--publish-windows", action="store_true",
                   help="also publish every window's raw scores")
    tuned = " (default: the bundle's tuned value from eval-online --tune, else %s)"
    p.add_argument("--smooth-windows", type=int, help="windows averaged" + tuned % 4)
    p.add_argument("--start-threshold", type=float, help="smoothed score that starts a gesture" + tuned % 0.5)
    p.add_argument("--end-threshold", type=float, help="smoothed score under which it ends" + tuned % 0.3)
    p.add_argument("--min-duration", type=float, help="seconds a gesture must last" + tuned % 0.3)
    p.add_argument("--silence-report", type=float, default=60.0, metavar="SECONDS",
                   help="live: say why after this many seconds without a gesture event, and again "
                        "every as many (0: only when the stream ends)")
    p.add_argument("--max-frames", type=int, help="stop each stream after this many frames")
    p.add_argument("--save-video", help="write an annotated video browsers play: .webm (VP8) or "
                                        ".mp4 (H.264; VP8 .webm beside it when this OpenCV has "
                                        "no H.264 encoder); skeleton, top class and score")
    p.add_argument("--show", action="store_true", help="show annotated frames (needs a display)")
    p.add_argument("--triton", metavar="URL",
                   help="run the stages on this Triton server (http://HOST:8000 or "
                        "grpc://HOST:8001, see microgesture serve) instead of in process")
    _live_source_options(p)
    p.add_argument("--quiet", action="store_true")


def run_serve(args: argparse.Namespace) -> int:
    from microgesture.export.triton_serve import gpu_instructions, serve_bundle

    stop = _install_stop_signals()
    ports = (args.http_port, args.grpc_port, args.metrics_port)
    server = serve_bundle(args.bundle, repository=args.repository, precision=args.precision,
                          address=args.address, ports=ports, max_batch=args.max_batch,
                          instances=args.instances, onnx_threads=args.threads,
                          max_queue_delay_us=args.max_queue_delay_us,
                          allow_remote=args.allow_remote, log_path=args.log)
    try:
        print(f"Triton serves {args.bundle} ({server.precision}, CPU) on {server.http_url} and "
              f"{server.grpc_url}; metrics on http://{args.address}:{args.metrics_port}/metrics\n"
              f"  stream through it: microgesture stream --bundle {args.bundle} --precision "
              f"{server.precision} --triton {server.http_url} --source 0\n"
              f"{gpu_instructions(args.bundle, ports)}", flush=True)
        while not stop.is_set() and server.process.poll() is None:
            stop.wait(0.5)
    finally:
        code = server.stop()
        server.cleanup()
    if not stop.is_set():
        raise MicrogestureError(f"tritonserver exited with code {code}; its log "
                                f"({server.log_path}) ends:\n{server.log_tail()}")
    return 0


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="exported bundle folder (microgesture export)")
    p.add_argument("--precision", default="auto",
                   help="auto (int8 if the bundle has it), int8 or fp32: the files served")
    p.add_argument("--address", default="127.0.0.1",
                   help="IP address to bind (loopback unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding to a non-loopback address")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch", type=int, default=8, help="largest batch Triton forms")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="how long Triton waits to fill a batch (microseconds)")
    p.add_argument("--instances", type=int, default=1, help="model instances per stage")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance")
    p.add_argument("--repository", help="write the CPU model repository here (default: a "
                                        "temporary folder, removed on exit)")
    p.add_argument("--log", help="tritonserver's log file (default: in the temporary folder)")


def run_listen(args: argparse.Namespace) -> int:
    from microgesture.stream.client import listen

    types = tuple(t for t in args.types.split(",") if t)
    try:
        listen(args.connect, args.stream, args.json, types, count=args.count,
               timeout=args.timeout, curve_server_key=args.curve_server_key,
               curve_key=args.curve_key)
    except KeyboardInterrupt:
        pass
    return 0


def _listen_options(p: argparse.ArgumentParser) -> None:
    p.epilog = ("latency = publish time - capture time of the window's last frame. A file streamed "
                "without --realtime runs on the video's own clock (frame / fps from when it was "
                "opened), so its latency says how far ahead (negative) or behind that clock the "
                "pipeline ran, and its lines say 'video clock'; stream with --realtime to measure "
                "what a camera user waits.")
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="the stream's PUB address")
    p.add_argument("--stream", action="append", help="only these stream ids (repeatable)")
    p.add_argument("--types", default="gesture,source",
                   help="event types: gesture, source, heartbeat, window")
    p.add_argument("--json", action="store_true", help="raw JSON, one event per line")
    p.add_argument("--count", type=int, help="exit after this many events")
    p.add_argument("--timeout", type=float, help="exit after this many idle seconds")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="the encrypting publisher's public key (SERVER.key, see microgesture keys)")
    p.add_argument("--curve-key", metavar="FILE",
                   help="your key pair (NAME.key_secret), whose NAME.key the publisher admits")


def run_demo_command(args: argparse.Namespace) -> int:
    from microgesture.demo import format_summary, run_demo, write_summary

    result = run_demo(duration_s=args.duration, seed=args.seed, bundle=args.bundle,
                      rebuild=args.rebuild, realtime=not args.fast, precision=args.precision,
                      progress=not args.quiet)
    print(format_summary(result))
    if args.json:
        write_summary(result, Path(args.json))
    return 0


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=60.0, help="seconds of synthetic video")
    p.add_argument("--seed", type=int, default=0, help="which synthetic video")
    p.add_argument("--bundle", help="use this bundle instead of the shipped demo model")
    p.add_argument("--rebuild", action="store_true",
                   help="train and export the demo model again (needs the train extra)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--fast", action="store_true",
                   help="replay the video as fast as possible instead of at its frame rate")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.add_argument("--quiet", action="store_true")


def run_bench_command(args: argparse.Namespace) -> int:
    from microgesture.stream.bench import format_report, run_bench

    precisions = [p for p in (args.precisions or "").split(",") if p] or None
    (source,) = _with_credentials(args, [args.source])
    report = run_bench(bundle=args.bundle, source=source, precisions=precisions, pose=args.pose,
                       duration_s=args.duration, size=args.size, fps=args.fps, hop=args.hop,
                       threads=args.threads, out=args.out, progress=not args.quiet,
                       naive=not args.no_naive)
    print(format_report(report))
    if args.json:
        slim = {**report, "results": [{k: v for k, v in r.items()
                                       if k not in ("samples", "window_latencies_ms")}
                                      for r in report["results"]]}
        print(json.dumps(slim, default=str))
    return 0


def _bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="exported bundle (default: the shipped demo model)")
    p.add_argument("--source", required=True,
                   help="video file (rendered to --size/--fps/--duration and paced like a camera), "
                        "camera index or rtsp:// URL")
    p.add_argument("--precisions", help="comma-separated, run one after the other "
                                        "(default: fp32,int8, the baseline first)")
    p.add_argument("--pose", default="mediapipe", help="as for stream")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per configuration")
    p.add_argument("--size", help="render a file source to WIDTHxHEIGHT (e.g. 640x480)")
    p.add_argument("--fps", type=float, help="render a file source at this frame rate")
    p.add_argument("--hop", type=int, help="frames between windows (default: the stream's)")
    p.add_argument("--threads", type=int, default=1, help="threads per inference session")
    p.add_argument("--out", default="bench-results", help="folder for bench.json and bench.png")
    p.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    p.add_argument("--no-naive", action="store_true",
                   help="skip the naive baseline (whole-window forward per window, nothing reused)")
    _credentials_options(p)
    p.add_argument("--quiet", action="store_true")
