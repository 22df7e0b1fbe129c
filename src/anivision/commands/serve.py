"""``anivision serve``: the offline web app (FastAPI + uvicorn, one plain HTML page)."""

from __future__ import annotations

import argparse
import shutil
import signal
import socket

import torch

from anivision.commands import add_shared
from anivision.errors import AnivisionError
from anivision.extras import require
from anivision.web import create_app


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser(
        "serve",
        help="web app: upload images, see labels, Grad-CAM++, who it is and similar styles",
        description=(
            "Serve a web page where images or whole illustrations are uploaded; faces are detected and "
            "cropped (the whole image when none is found), and for each face the page shows the top-k labels "
            "of every --run with a Grad-CAM++ overlay, who it is among the --gallery's characters (or "
            "'unknown'), and the most similar images by style of the --retrieval run. Works with no network: "
            "nothing is loaded from outside. Needs the [web] extra."
        ),
    )
    p.add_argument("--run", action="append", default=[], metavar="RUN",
                   help="a classification run folder (repeat for several; default: none)")
    p.add_argument("--gallery", metavar="G", help="an enrolled gallery folder ('anivision enroll'; default: none)")
    p.add_argument("--retrieval", metavar="RUN", help="a style-retrieval run folder (default: none)")
    p.add_argument("--retrieval-gallery", metavar="DIR",
                   help="images the --retrieval run searches, <work>/<role>/<image> (default: the run's own data)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 lets other machines upload to this one")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (0: any free port, printed)")
    add_shared(p, "--top-k", "face: labels, characters and similar images", default=5)
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest request body accepted, in MB")
    p.add_argument("--threads", type=int, help="torch CPU threads for model calls (default: torch's, one per core)")
    add_shared(p, "--device")
    p.set_defaults(func=run_serve)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line error (busy port, unknown host).

    Binding here, before uvicorn starts, turns a busy port into a clear message and lets
    ``--port 0`` pick a free port whose number is then printed.
    """
    try:
        family, kind, proto, _name, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise AnivisionError(f"--host {host}: cannot listen there ({exc.strerror or exc})") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AnivisionError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port (0: any free one)") from exc
    return sock


def run_serve(args: argparse.Namespace) -> int:
    """Load the models, listen, print the URL, serve until Ctrl+C.

    Raises:
        AnivisionError: the [web] extra missing, a bad folder or option, a busy port.
    """
    uvicorn = require("uvicorn", "web", "anivision serve")
    if not 0 <= args.port <= 65535:
        raise AnivisionError(f"--port must be 0-65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise AnivisionError(f"--max-upload-mb must be above 0, got {args.max_upload_mb}")
    if args.threads is not None:
        if args.threads < 1:
            raise AnivisionError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    app = create_app(
        args.run, args.gallery, args.retrieval, args.top_k, retrieval_gallery=args.retrieval_gallery,
        device=args.device, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
    )
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    models = app.state.analyzer.models
    if models.empty:
        print("note: no model loaded (--run, --gallery, --retrieval): the page will say so", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other machines can reach this app", flush=True)
    print(f"anivision serve: http://{shown}:{port}/  (Ctrl+C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    # uvicorn shuts down gracefully on SIGTERM and then raises it again: end as on Ctrl+C instead,
    # so the temporary folder goes (also when the signal comes before uvicorn took it over).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        shutil.rmtree(app.state.workdir, ignore_errors=True)
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
