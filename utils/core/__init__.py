"""Layer 0, ``utils.core``: what every stage needs and nothing stage-specific.

``paths`` (every path, from the repository root, with environment overrides), ``common``
(seeding, device, autocast, atomic writes, JSON, config building), ``checkpoint`` (checkpoint
dicts written atomically, read with ``weights_only=True``) and ``pretrained`` (finding and
loading Hugging Face models offline or from the hub). May import no other ``utils`` layer.
"""
