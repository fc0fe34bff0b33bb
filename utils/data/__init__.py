"""Layer 1, ``utils.data``: datasets on disk and in memory, and the text tokenizers.

``course`` (the 4-class course format: read, check, split), ``flickr8k`` (the corpus and the
subset built from it), ``fetch`` (local copy, build or download), ``datasets`` (PyTorch datasets,
image decoding, transforms), ``tokenizers`` (word-level vectoriser and the pretrained models'
tokenizers), ``enrich`` (captions made longer without changing their meaning).
May import ``utils.core`` only. ``python -m utils.data {build,check,fetch}``.
"""
