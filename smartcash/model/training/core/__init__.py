"""Validation core: prediction processor, classification extractor, validation batch processor/executor, mAP calculator.

Imports nothing: other evaluation code imports ``parallel_map_calculator`` alone (numpy only).
"""
