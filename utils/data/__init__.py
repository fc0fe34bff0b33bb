"""Layer 1, ``utils.data``: datasets on disk and in memory, and the text tokenizers.

``course`` (the 4-class course format: read, check, split), ``flickr8k`` (the corpus and the
subset built from it), ``fetch`` (local copy, build or download), ``generic`` (any image-caption
table), ``datasets`` (PyTorch datasets, image decoding, the loader factory), ``tokenizers``
(word-level vectoriser and the pretrained models' tokenizers), ``captions`` (the captioner's
vocabulary), ``tags`` (Flickr8k tags), ``glove`` (GloVe vectors), ``enrich`` (captions made
longer without changing their meaning). May import ``utils.core`` only.
``python -m utils.data {build,check,fetch}``.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.data.course": ("CLASSES", "DataConfig", "DataError", "check_dataset", "load_dataset",
                          "split_table", "summarize_dataset"),
    "utils.data.datasets": ("write_synthetic_image",),
    "utils.data.fetch": ("ensure_dataset", "ensure_flickr8k"),
    "utils.data.flickr8k": ("FLICKR_IMAGES", "outside_image"),
    "utils.data.glove": ("embedding_matrix", "load_glove"),
    "utils.data.tags": ("VISUAL_NOUNS", "build_tag_table"),
    "utils.data.tokenizers": ("HFTokenizerAdapter", "fit_tokenizer"),
    "utils.data.captions": ("UNK", "Vocabulary"),
    "utils.data.words": ("normalize_caption", "split_words"),
    "utils.data.enrich": ("ChatClient", "LLMEnricher", "SiblingCaptionEnricher",
                          "apply_enrichment", "choose_text_length",
                          "enrich_captions", "enrichment_summary", "examples_table",
                          "write_caption_folder"),
})
