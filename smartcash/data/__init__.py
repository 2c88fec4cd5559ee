"""Dataset layer: dataset yaml, labels and their checks, dataset/loader, augmentation, synthetic data, split, importers."""
