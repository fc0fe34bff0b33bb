"""Layer 5, ``utils.experiments``: the notebooks' comparison runs, through one API.

``runs`` (a run spec -> train -> evaluate -> a table row), ``reuse`` (notebook 03: is reusing
steps 1-2 worth it?), ``pretrained_text`` (notebook 04), ``enrichment`` (notebook 05).
May import every layer below it; nothing imports it but the notebooks.
"""
