"""tfship: take a TensorFlow model from a merge request to TensorFlow Serving, safely."""

__version__ = "0.1.0"
