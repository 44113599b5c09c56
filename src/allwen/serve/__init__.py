"""Use a trained model: export a bundle, predict new images, calibrate, explain, ONNX, a web page.

``allwen.load_bundle(path).predict(paths_or_images)`` is the Python entry point; the CLI's
``export``, ``predict`` and ``serve`` commands are thin layers over this package.
"""

from allwen.serve.bundle import Bundle, export_bundle, load_bundle

__all__ = ["Bundle", "export_bundle", "load_bundle"]
