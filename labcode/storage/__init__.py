"""Image codecs, the on-disk format of Stanford 2D-3D-S, the data sets, loaders and the prepared cache."""
