"""bidense: binary neural networks (1-bit weights and activations) for dense prediction.

Sub-packages, lowest layer first (a lower layer never imports a higher one):
``binarize`` -> ``nn`` -> ``models`` -> ``profile`` ; ``data``, ``metrics`` ; ``engine`` ;
``deploy`` (numpy + compiled kernels, no torch at run time) ; ``cli``.
"""

__version__ = "0.1.0"
