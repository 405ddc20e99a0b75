"""The other systems of the kit's sources, on the same phantom data as FocalMix.

- :mod:`~focalmix_lib.related.anogan`: AnoGAN (Schlegl et al., IPMI 2017) and the
  f-AnoGAN izif encoder (Schlegl et al., MedIA 2019): unsupervised anomaly detection
  with a GAN trained on normal tissue only.
- :mod:`~focalmix_lib.related.bdcl`: balanced and discriminative contrastive learning
  (BDCL, ICASSP 2024) for class-imbalanced candidate classification.
- :mod:`~focalmix_lib.related.candidates`: 2D axial patches and labelled candidate
  points (nodule kinds, vessels, other tissue) cut from the phantoms, shared by both.
"""
