"""Layer 3, ``utils.eval``: measuring and showing what a model does.

``classification`` (predictions, accuracy, macro-F1, confusion matrix), ``retrieval`` (R@k,
median rank, class precision and their chance levels), ``index`` (the gallery of embeddings),
``search`` (top-k text -> images and image -> texts), ``zero_shot`` (classification by prompts),
``plots`` (every figure). May import ``utils.core``, ``utils.data`` and ``utils.models``.
"""
