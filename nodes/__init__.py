"""Processing nodes. Each node family lives in its own module; numba kernels in ``kernels`` files."""
