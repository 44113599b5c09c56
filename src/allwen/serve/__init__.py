"""Use a trained model: export a bundle, predict new images, calibrate, explain, ONNX, a web page.

``allwen.load_bundle(path).predict(paths_or_images)`` is the Python entry point; the CLI's
``export``, ``predict`` and ``serve`` commands are thin layers over this package. Imports are
lazy: loading a bundle with the ONNX runtime never imports torch or timm.
"""

from typing import Any

__all__ = ["Bundle", "export_bundle", "load_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from allwen.serve import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'allwen.serve' has no attribute {name!r}")
