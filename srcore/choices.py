"""The values train.device / train.precision (params.yaml) and --device / --precision (the
CLI) accept, in one place and in a module that imports nothing, so that params checking and
--help need no torch. srcore.train.runtime says what each one does."""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
