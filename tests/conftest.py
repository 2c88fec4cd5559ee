"""Shared test set-up: offline, deterministic, tiny."""

import os

# ultralytics must never try the network (settings sync, font downloads) during tests.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
