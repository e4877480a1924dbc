"""Encrypted, authenticated event publishing with CurveZMQ.

When events leave the machine (``--allow-remote``) they should be encrypted and
only known subscribers should get them. CurveZMQ does both: the publisher holds a
server key pair, every subscriber a client key pair; a subscriber must know the
server's public key to connect at all, and the publisher accepts only the client
public keys found in its clients folder (a ZAP handler checks each connection).

Keys are ZeroMQ's standard certificate files (``NAME.key`` with the public key,
``NAME.key_secret`` with both; the secret file is written mode 0600), so
subscribers in other languages (czmq's ``zcert``, ...) read the same files::

    microgesture keys keys/ --name server          # on the publishing machine
    microgesture keys keys/ --name alice           # for a subscriber; copy alice.key
                                                   # into the publisher's clients folder
    microgesture stream ... --publish tcp://0.0.0.0:5555 --allow-remote \\
        --curve-secret-key keys/server.key_secret --curve-clients clients/
    microgesture listen --connect tcp://HOST:5555 \\
        --curve-server-key server.key --curve-key keys/alice.key_secret

Only pyzmq and the standard library are needed (the Python client uses this too).
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq

from microgesture.core.errors import MicrogestureError

_NEEDS = ("this pyzmq's libzmq has no CURVE security (built without libsodium); install the "
          "pyzmq wheel from PyPI, which has it")


def _check_available() -> None:
    if not zmq.has("curve"):
        raise MicrogestureError(_NEEDS)


def write_keypair(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) into
    ``folder``; refuses to overwrite an existing pair. Returns both paths."""
    import zmq.auth

    _check_available()
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise MicrogestureError(f"key name {name!r} is not valid: use letters, digits, '-', '_' "
                                "or '.', e.g. server or alice")
    folder = Path(folder)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise MicrogestureError(f"{path} already exists; choose another --name or folder "
                                    "(keys are never overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)   # the secret file is never readable by others, not even briefly
    try:
        made_public, made_secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old)
    os.chmod(made_secret, 0o600)
    os.chmod(made_public, 0o644)
    return Path(made_public), Path(made_secret)


def _load(path: str | os.PathLike, secret: bool, what: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    _check_available()
    path = Path(path)
    if not path.is_file():
        raise MicrogestureError(f"{what} {path} does not exist; make one with "
                                "microgesture keys FOLDER --name NAME")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise MicrogestureError(f"{path} is not a ZeroMQ key file ({exc}); give a file written "
                                "by microgesture keys") from None
    if secret and secret_key is None:
        raise MicrogestureError(f"{path} holds only a public key; {what} must be the "
                                "NAME.key_secret file")
    return public, secret_key


def serve(socket: zmq.Socket, context: zmq.Context, secret_key: str | os.PathLike,
          clients: str | os.PathLike):
    """Make ``socket`` (not yet bound) a CURVE server with the key pair in
    ``secret_key`` that accepts only the client public keys (``*.key``) in the folder
    ``clients``. Returns the authenticator; stop it when the socket is closed."""
    from zmq.auth.thread import ThreadAuthenticator

    public, secret = _load(secret_key, True, "the server's secret key")
    clients = Path(clients) if clients else None
    if clients is None or not clients.is_dir():
        raise MicrogestureError(
            f"--curve-clients must be a folder holding the public keys (NAME.key) of the "
            f"subscribers allowed to receive events, got {clients}")
    if not any(clients.glob("*.key")):
        raise MicrogestureError(f"{clients} holds no client public key (NAME.key): no subscriber "
                                "could receive anything; copy each subscriber's NAME.key there")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth


def connect_as_client(socket: zmq.Socket, server_key: str | os.PathLike,
                      client_key: str | os.PathLike) -> None:
    """Make ``socket`` (not yet connected) a CURVE client of the server whose public key
    is in ``server_key``, with the client key pair in ``client_key``."""
    server_public, _ = _load(server_key, False, "the server's public key")
    public, secret = _load(client_key, True, "the client's secret key")
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret
