"""Training loops: the CNN with a pixel loss (cnn.py); devices and precision (runtime.py)."""
