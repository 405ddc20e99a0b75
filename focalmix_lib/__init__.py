"""FocalMix kit: semi-supervised 3D lung nodule detection (Wang et al., CVPR 2020).

Modules follow the data flow of the kit, each depending only on those before it:
files -> ``data`` -> ``detection`` -> ``losses`` / ``ssl`` -> ``train`` -> ``evaluate``
-> ``reproduce``.
"""

__version__ = "0.1.0"
