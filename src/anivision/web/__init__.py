"""``anivision serve``: an offline web app over the Python API.

:func:`create_app` loads classification runs, an enrolled gallery and a style-retrieval run once
and serves one plain HTML page (inline CSS and JavaScript, nothing from the network) where a user
uploads images or whole illustrations; faces are found and each gets every model's answer.
FastAPI, uvicorn and python-multipart come with the ``[web]`` extra and are imported only when
the app is built.
"""

from __future__ import annotations

from anivision.web.app import create_app
from anivision.web.service import Analyzer, Models, face_detector, load_models
from anivision.web.uploads import UploadError, open_image

__all__ = ["Analyzer", "Models", "UploadError", "create_app", "face_detector", "load_models", "open_image"]
