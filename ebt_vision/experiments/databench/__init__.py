"""The data benchmark (``ebt-vision bench-data``, ``reports/data.*``): the streaming loaders on generated datasets of
20,000 photos, 20,000 clips and a 1 GB token file."""
