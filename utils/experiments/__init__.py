"""Layer 5, ``utils.experiments``: the notebooks' comparison runs, through one API.

``runs`` (the one variant runner: a run spec -> train -> evaluate -> a table row), ``reuse``
(notebook 03: is reusing steps 1-2 worth it?), ``pretrained_text`` (notebook 04), ``enrichment``
(notebook 05), ``fusion`` (notebook 07), ``benchmark`` (notebook 08).
May import every layer below it; nothing imports it but the notebooks.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.experiments.fusion": ("fusion",),
    "utils.experiments.runs": ("RunSpec", "best_by_validation", "clip_row", "compare",
                               "run_index", "train_run"),
    "utils.experiments.reuse": ("STEP1_VARIANTS", "reuse_specs"),
    "utils.experiments.pretrained_text": ("PretrainedTowerConfig", "smallbert_clip_configs",
                                          "step3_clip_configs", "step3_row", "tower_clip_configs",
                                          "tower_config"),
    "utils.experiments.enrichment": ("EnrichConfig", "enrichment_clip_configs", "human_captions",
                                     "llm_model_name", "make_llm_enricher", "ranks_on_test"),
    "utils.experiments.benchmark": ("ANCHORS", "BENCHMARK_CHECKPOINT", "BenchmarkConfig", "beats",
                                    "benchmark_figures", "default_variants", "figures_table",
                                    "run_variant", "variant_configs", "variant_row"),
})
