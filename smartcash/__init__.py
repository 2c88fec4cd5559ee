"""SmartCash: YOLOv5-style banknote detection training framework.

Imports nothing heavy: ``smartcash.model.training.core.parallel_map_calculator`` is imported on
its own by other evaluation code and must pull in numpy only.
"""

__version__ = "0.1.0"
