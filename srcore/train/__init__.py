"""Training: the CNN with a pixel loss (cnn.py), the GAN phases (gan.py), devices and precision
(runtime.py), resumable state (state.py), data-parallel processes under torchrun
(distributed.py)."""
