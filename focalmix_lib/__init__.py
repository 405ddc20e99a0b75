"""FocalMix kit: semi-supervised 3D lung nodule detection (Wang et al., CVPR 2020).

Its packages follow the data flow of the kit, each importing only those before it
(docs/architecture.md): ``data`` -> ``detection`` -> ``losses`` / ``ssl`` -> ``training``
-> ``inference`` -> ``evaluation`` -> ``reproduction`` -> ``viz`` / ``cli``.
"""

__version__ = "0.1.0"
