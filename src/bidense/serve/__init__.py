"""``bidense serve``: a local browser demo of a trained model (FastAPI + one static page).

Upload an image or pick a synthetic sample; the page shows the prediction as the task draws it
(class overlay with a legend, coloured depth with a scale bar in metres, probability heat-map)
and the latency of the packed ``.bdn`` runtime next to PyTorch for that image. ``predictor``
holds the models, ``app`` the web routes and upload checks. Sits at the top beside ``cli`` and
``benchmark``; binds to 127.0.0.1 by default and loads nothing from the internet. See
``docs/serve.md``.
"""

from bidense.serve.app import MAX_SIDE, MAX_UPLOAD_BYTES, UploadError, build_app, read_image, serve
from bidense.serve.predictor import Prediction, Predictor, class_names, input_size

__all__ = ["MAX_SIDE", "MAX_UPLOAD_BYTES", "Prediction", "Predictor", "UploadError", "build_app",
           "class_names", "input_size", "read_image", "serve"]
