"""Use a trained model: load a bundle, predict new images, explain, the web app.

``allwen.load_bundle(path).predict(paths_or_images)`` is the Python entry point; the CLI's
``predict`` and ``serve`` commands are thin layers over this package. It is the runtime only:
bundles are written by :mod:`allwen.export`, which this package never imports (nor the run
folder). Imports are lazy: loading a bundle with the ONNX runtime never imports torch or timm.
"""

from typing import Any

__all__ = ["Bundle", "load_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from allwen.serve import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'allwen.serve' has no attribute {name!r}")
