"""The encoders' CUDA paths: the streaming pipeline for batches (``run``, its stages in ``tokenize``, ``batching`` and
``collect``), CUDA graphs of the forward (``graphs``), graphed single queries (``query``), and the mix-in that wires
them into an encoder (``paths``). Nothing is imported here: a tokenizer worker process imports ``tokenize`` alone."""
