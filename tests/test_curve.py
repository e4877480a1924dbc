"""Encrypted, authenticated publishing (CurveZMQ): keys, stream -> listen, stream -> the
Python client, subscribers without the right key get nothing; IPv6 loopback."""

import json
import logging
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from microgesture.cli import main
from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import DEMO_BUNDLE
from microgesture.stream.client import Subscriber
from microgesture.stream.curve import write_keypair
from microgesture.stream.events import EventPublisher

zmq = pytest.importorskip("zmq")
pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def keys(tmp_path):
    """server and alice key pairs; alice's public key admitted; mallory's is not."""
    k = tmp_path / "keys"
    clients = tmp_path / "clients"
    clients.mkdir()
    server = write_keypair(k, "server")
    alice = write_keypair(k, "alice")
    mallory = write_keypair(k, "mallory")
    (clients / "alice.key").write_bytes(alice[0].read_bytes())
    return {"server": server, "alice": alice, "mallory": mallory, "clients": clients}


def receive_while_publishing(pub, subscribers, seconds=3.0):
    """Publish heartbeats until the first subscriber has some (or time runs out); return
    what each subscriber received."""
    got = [[] for _ in subscribers]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(got[0]) < 3:
        pub.publish_heartbeat("cam", {"fps": 1.0})
        for i, sub in enumerate(subscribers):
            while (event := sub.recv(timeout=0.05)) is not None:
                got[i].append(event)
    for _ in range(5):   # a little more for the others
        pub.publish_heartbeat("cam", {"fps": 1.0})
        time.sleep(0.05)
        for i, sub in enumerate(subscribers[1:], 1):
            while (event := sub.recv(timeout=0.05)) is not None:
                got[i].append(event)
    return got


def test_keys_command_writes_a_pair_and_never_overwrites(tmp_path, capsys):
    assert main(["keys", str(tmp_path), "--name", "server"]) == 0
    public, secret = tmp_path / "server.key", tmp_path / "server.key_secret"
    assert "public" in capsys.readouterr().out
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" in secret.read_text() and "secret-key" not in public.read_text()
    assert main(["keys", str(tmp_path), "--name", "server"]) == 2     # exists: refused
    assert main(["keys", str(tmp_path), "--name", "../evil"]) == 2


def test_encrypted_round_trip_and_strangers_get_nothing(keys):
    with EventPublisher("tcp://127.0.0.1:*", curve_secret_key=keys["server"][1],
                        curve_clients=keys["clients"]) as pub:
        alice = Subscriber(pub.endpoint, types=("heartbeat",), curve_server_key=keys["server"][0],
                           curve_key=keys["alice"][1])
        plain = Subscriber(pub.endpoint, types=("heartbeat",))
        mallory = Subscriber(pub.endpoint, types=("heartbeat",),
                             curve_server_key=keys["server"][0], curve_key=keys["mallory"][1])
        try:
            time.sleep(0.3)
            got_alice, got_plain, got_mallory = receive_while_publishing(pub, [alice, plain, mallory])
        finally:
            for s in (alice, plain, mallory):
                s.close()
    assert got_alice and got_alice[0]["stats"]["fps"] == 1.0
    assert got_plain == [] and got_mallory == []


def test_a_plain_zmtp_peer_sees_no_event_bytes(keys):
    """A raw TCP listener in the middle would see no JSON: check the bytes on the wire by
    reading them with a plain socket pretending to be a subscriber."""
    with EventPublisher("tcp://127.0.0.1:*", curve_secret_key=keys["server"][1],
                        curve_clients=keys["clients"]) as pub:
        port = int(pub.endpoint.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            # a ZMTP 3 greeting asking for the NULL mechanism: the CURVE server refuses it
            raw.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 16
                        + b"\x00" + b"\x00" * 31)
            pub.publish_heartbeat("cam", {"fps": 1.0})
            data = b""
            raw.settimeout(0.5)
            try:
                while chunk := raw.recv(4096):
                    data += chunk
            except (socket.timeout, ConnectionResetError):
                pass
    assert b"heartbeat" not in data and b"fps" not in data


def test_half_configured_curve_is_a_clear_error(keys, tmp_path):
    with pytest.raises(MicrogestureError, match="both"):
        Subscriber("tcp://127.0.0.1:5999", curve_server_key=keys["server"][0])
    with pytest.raises(MicrogestureError, match="curve-clients"):
        EventPublisher("tcp://127.0.0.1:*", curve_secret_key=keys["server"][1])
    with pytest.raises(MicrogestureError, match="only a public key"):
        EventPublisher("tcp://127.0.0.1:*", curve_secret_key=keys["server"][0],
                       curve_clients=keys["clients"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MicrogestureError, match="no client public key"):
        EventPublisher("tcp://127.0.0.1:*", curve_secret_key=keys["server"][1], curve_clients=empty)


def test_plain_remote_publishing_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        with EventPublisher("tcp://0.0.0.0:*", allow_remote=True):
            pass
    assert "without encryption" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with EventPublisher("tcp://127.0.0.1:*"):
            pass
    assert "without encryption" not in caplog.text


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback(keys):
    with EventPublisher("tcp://[::1]:*") as pub:
        assert pub.endpoint.startswith("tcp://[::1]:")
        with Subscriber(pub.endpoint, types=("heartbeat",)) as sub:
            time.sleep(0.2)
            (got,) = receive_while_publishing(pub, [sub])
    assert got


def _scene(tmp_path, frames=75, fps=15):
    """A small video with a recorded skeleton (nobody in it: heartbeats and source events)."""
    import cv2

    video = tmp_path / "scene.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 64))
    for _ in range(frames):
        writer.write(np.full((64, 64, 3), 90, np.uint8))
    writer.release()
    skeleton = tmp_path / "scene.jsonl"
    with open(skeleton, "w") as f:
        for i in range(frames):
            f.write(json.dumps({"frame": i, "t": i / fps, "layout": "coco18", "width": 64,
                                "height": 64, "keypoints": [[None, None, 0.0]] * 18}) + "\n")
    return video, skeleton


def test_stream_to_listen_and_to_the_python_client_encrypted(keys, tmp_path):
    video, skeleton = _scene(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    listen = subprocess.Popen(
        [sys.executable, "-m", "microgesture", "listen", "--connect", address, "--json",
         "--types", "heartbeat,source", "--count", "3", "--timeout", "30",
         "--curve-server-key", str(keys["server"][0]), "--curve-key", str(keys["alice"][1])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    received, stop = {"alice": [], "plain": []}, threading.Event()

    def client(name, **curve):
        with Subscriber(address, types=("heartbeat", "source"), **curve) as sub:
            while not stop.is_set():
                event = sub.recv(timeout=0.1)
                if event is not None:
                    received[name].append(event)
    threads = [threading.Thread(target=client, args=("alice",), daemon=True,
                                kwargs={"curve_server_key": keys["server"][0],
                                        "curve_key": keys["alice"][1]}),
               threading.Thread(target=client, args=("plain",), daemon=True)]
    for t in threads:
        t.start()
    try:
        stream = subprocess.run(
            [sys.executable, "-m", "microgesture", "stream", "--bundle", str(DEMO_BUNDLE),
             "--source", str(video), "--pose", f"recorded:{skeleton}", "--realtime",
             "--publish", address, "--heartbeat", "0.2", "--quiet",
             "--curve-secret-key", str(keys["server"][1]), "--curve-clients",
             str(keys["clients"])], capture_output=True, text=True, timeout=300)
        out, err = listen.communicate(timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        if listen.poll() is None:
            listen.kill()
    assert stream.returncode == 0, stream.stderr[-2000:]
    assert listen.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3 and {e["type"] for e in lines} <= {"heartbeat", "source"}
    assert any(e["type"] == "heartbeat" for e in received["alice"])
    assert received["plain"] == []
