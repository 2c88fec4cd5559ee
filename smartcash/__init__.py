"""SmartCash: YOLOv5-style banknote detection training framework.

The Python API mirrors the commands, keyword for flag::

    from smartcash import train, validate, predict, export
    result = train(phase=1, data="data.yaml", epochs=30)   # TrainResult
    validation = validate(weights=result.best_weights)      # ValidationResult (.metrics.fine / .main MapResult)

Imports nothing heavy: the API is loaded on first use (``__getattr__``), and
``smartcash.model.training.core.parallel_map_calculator`` is imported on its own by other
evaluation code and must pull in numpy only.
"""

__version__ = "0.1.0"

#: API name -> (module, attribute); None: the module itself, which is callable (``smartcash.cli.callable_module``).
_API = {
    "train": ("smartcash.train", None),
    "validate": ("smartcash.val", "validate"),
    "predict": ("smartcash.predict", None),
    "export": ("smartcash.export", None),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):  # -> the API function (no typing import: this module stays instant)
    if name not in _API:
        raise AttributeError(f"module 'smartcash' has no attribute {name!r}")
    import importlib

    module_name, attribute = _API[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__():
    return sorted({*globals(), *_API})
