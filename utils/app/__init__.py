"""Beside the training layers, ``utils.app``: the search page over every saved CLIP checkpoint.

The search itself is ``utils.eval.search`` (the one engine, the notebooks' too); here:
``catalog`` (the CLIP checkpoints and
gallery files of ``models/``, each loaded or explained), ``index`` (``python -m utils.app.index``:
a gallery of all 8,091 Flickr8k images for a saved CLIP), ``bench`` (``python -m utils.app.bench``:
median latency per text query), ``page`` (the Streamlit page), ``__main__`` (``python -m
utils.app`` = ``make app``: serves the page on 127.0.0.1, ``$APP_PORT``, no telemetry).
May import ``utils.core``, ``utils.data``, ``utils.models`` and ``utils.eval``.
"""
