"""Layer 3, ``utils.eval``: measuring and showing what a model does.

``classification`` (predictions, accuracy, macro-F1, confusion matrix), ``retrieval`` (R@k,
median rank, class precision and their chance levels), ``index`` (the one gallery builder),
``search`` (the one search engine: top-k text -> images and image -> texts), ``zero_shot``
(classification by prompts), ``reload`` (the proof that a reloaded model is the saved one),
``captioning``, ``clipscore``, ``enrichment`` (what an enriched caption keeps and invents),
``multilabel``, ``human_agreement``, ``plots`` and ``caption_plots`` (every figure). May
import ``utils.core``, ``utils.data``, ``utils.models``.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.eval.plots": ("plots",),
    "utils.eval.caption_plots": ("caption_plots",),
    "utils.eval.classification": ("classification_metrics", "evaluate", "misclassified_captions",
                                  "misclassified_images", "predict_logits", "report_frame",
                                  "summary_frame"),
    "utils.eval.index": ("GalleryIndex", "build_index", "least_similar_captions"),
    "utils.eval.retrieval": ("metrics_table", "query_gains", "text_to_image_ranks"),
    "utils.eval.search": ("ClipSearch", "query_image", "results_table"),
    "utils.eval.zero_shot": ("evaluate_clip",),
    "utils.eval.reload": ("prove_reload", "same_results"),
    "utils.eval.captioning": ("ANCHORS", "best_and_worst", "caption_scores", "clip_score_report",
                              "pick_examples"),
    "utils.eval.multilabel": ("roc_curves",),
    "utils.eval.enrichment": ("best_and_worst_enrichments", "enrichment_quality",
                              "score_enrichment"),
})
