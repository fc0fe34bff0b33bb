"""Layer 2, ``utils.models``: the networks, built from their config dataclasses.

``cnn`` (image classifier: trunk + head), ``smallbert`` (SmallBERT, its poolers and the text
classifier), ``pooling``, ``text_pretrained`` (a BERT-family encoder as a text tower), ``clip``
(both towers, the projections and the contrastive loss inside the model; save and reload),
``features`` (frozen ImageNet encoders' features, cached), ``captioner``, ``fusion``,
``llm`` (a causal language model answering chat messages in batches), ``losses``. Builders
take configs (and weights); they read no checkpoint of another stage. May import
``utils.core`` and ``utils.data``.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.models.cnn": ("CnnConfig", "ImageClassifier", "ScratchTrunk", "build_head",
                         "conv_block", "load_image_classifier"),
    "utils.models.smallbert": ("POOLINGS", "SentenceEncoder", "SmallBert", "SmallBertConfig",
                               "attention_padding", "encoder_block", "load_text_classifier",
                               "pool_tokens"),
    "utils.models.pooling": ("masked_mean",),
    "utils.models.text_pretrained": ("HFTextEncoder", "build_hf_text_encoder",
                                     "sentence_embedder"),
    "utils.models.clip": ("CLIP_CHECKPOINT", "ClipConfig", "ClipLoss", "ClipModel", "load_clip",
                          "save_clip", "similarity"),
    "utils.models.captioner": ("CAPTIONER_CHECKPOINT", "CaptionerConfig", "build_captioner",
                               "caption_cli", "generate_captions", "load_captioner",
                               "save_captioner"),
    "utils.models.llm": ("CausalLMGenerator", "DEFAULT_LM", "load_causal_lm"),
    "utils.models.fusion": ("FUSION_CHECKPOINT", "FusionConfig", "load_fusion", "save_fusion"),
})
