"""PyTorch tensors: the torch backend, its custom op, the CUDA launch and the eager maths.

Imported only once torch is (``frameworks.registry`` looks at ``sys.modules``).
"""
