"""Secrets stay secret: one redaction for every command, credentials from the
environment or a file instead of the command line."""

import json
import os
import subprocess
import sys

import pytest

from microgesture import cli
from microgesture.core.errors import MicrogestureError
from microgesture.core.redact import (load_credentials, redact, redact_text, redact_value,
                                      secrets_of, with_credentials)

PASSWORD = "S3cr3tPw"


def test_one_redaction_everywhere():
    from microgesture.stream import sources

    url = f"rtsp://admin:{PASSWORD}@cam.local:554/live?token=abc123&channel=1"
    assert redact(url) == "rtsp://***@cam.local:554/live?token=***&channel=1"
    assert sources.redact is redact and sources.redact_text is redact_text  # the same helper
    assert PASSWORD not in redact_text(f"cannot open {url}: auth failed for {PASSWORD}",
                                       secrets_of(url))
    nested = redact_value({"config": {"source": url}, "list": [url, 3]})
    assert PASSWORD not in json.dumps(nested) and nested["list"][1] == 3


def test_source_events_use_the_same_redaction():
    from microgesture.stream.events import EventPublisher

    with EventPublisher("tcp://127.0.0.1:*") as pub:
        record = pub.publish_source("cam", "lost", f"rtsp://u:{PASSWORD}@h/x?key=k9k9k9 timed out",
                                    source=f"http://u:{PASSWORD}@h/x?auth=zzz")
    assert PASSWORD not in json.dumps(record) and "k9k9k9" not in json.dumps(record)
    assert "zzz" not in record["source"]


def test_credentials_from_an_environment_variable_or_a_file(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CAM_CRED", f"admin:{PASSWORD}")
    assert load_credentials(env="CAM_CRED") == f"admin:{PASSWORD}"
    file = tmp_path / "cred"
    file.write_text(f"viewer:p@ss:word\n")
    os.chmod(file, 0o644)
    assert load_credentials(file=file) == "viewer:p@ss:word"
    assert "chmod 600" in caplog.text                      # readable by others: warned
    assert load_credentials() is None
    for bad in ({"env": "NOT_SET_ANYWHERE"}, {"file": tmp_path / "missing"},
                {"env": "CAM_CRED", "file": file}):
        with pytest.raises(MicrogestureError):
            load_credentials(**bad)
    monkeypatch.setenv("CAM_BAD", "no-colon")
    with pytest.raises(MicrogestureError, match="user:password"):
        load_credentials(env="CAM_BAD")
    url = with_credentials("rtsp://cam:554/live", "viewer:p@ss:word")
    assert url == "rtsp://viewer:p%40ss:word@cam:554/live"
    assert with_credentials("rtsp://other:pw@cam/live", "viewer:x") == "rtsp://other:pw@cam/live"
    assert with_credentials("clip.mp4", "viewer:x") == "clip.mp4"


def test_stream_and_bench_take_credentials_from_the_environment(monkeypatch):
    """The URL on the command line has no password; the source opened gets it."""
    seen = {}
    monkeypatch.setenv("CAM_CRED", f"admin:{PASSWORD}")

    def fake_stream(options, stop=None, on_ready=None):
        seen["stream"] = options.sources
        return {"streams": {}}

    def fake_bench(**kwargs):
        seen["bench"] = kwargs["source"]
        raise MicrogestureError(f"bench failed on {kwargs['source']}")

    import microgesture.stream.bench as bench
    import microgesture.stream.pipeline as pipeline
    monkeypatch.setattr(pipeline, "run_stream", fake_stream)
    monkeypatch.setattr(bench, "run_bench", fake_bench)
    assert cli.main(["stream", "--bundle", "b", "--source", "rtsp://cam/live", "--source", "a.mp4",
                     "--credentials-env", "CAM_CRED", "--quiet"]) == 0
    assert seen["stream"] == [f"rtsp://admin:{PASSWORD}@cam/live", "a.mp4"]
    assert cli.main(["bench", "--source", "rtsp://cam/live", "--credentials-env", "CAM_CRED"]) == 2
    assert seen["bench"] == f"rtsp://admin:{PASSWORD}@cam/live"


def test_bench_never_prints_the_password_of_its_source(tmp_path):
    """A source that cannot be opened: every line bench prints is redacted."""
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:9/live"
    result = subprocess.run([sys.executable, "-m", "microgesture", "bench", "--source", url,
                             "--precisions", "int8", "--duration", "1", "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "***@127.0.0.1:9" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
