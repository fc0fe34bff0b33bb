"""Layer 2, ``utils.models``: the networks, built from their config dataclasses.

``cnn`` (image classifier: trunk + head), ``smallbert`` (SmallBERT, its poolers and the text
classifier), ``text_pretrained`` (a BERT-family encoder as a text tower), ``clip`` (both towers,
the projections and the contrastive loss inside the model; save and reload).
May import ``utils.core`` and ``utils.data``.
"""
