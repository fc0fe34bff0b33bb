"""Layer 0, ``utils.core``: what every stage needs and nothing stage-specific.

``paths`` (every path, from the repository root, with environment overrides), ``common``
(seeding, atomic writes, JSON, stage configs), ``device`` (the one device and precision policy,
the run recipe), ``checkpoint`` (checkpoint dicts written atomically, read with
``weights_only=True``, older layouts translated), ``pretrained`` (Hugging Face models offline or
from the hub), ``exports`` (the subpackages' lazy ``__all__``). May import no other layer.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.core.paths": ("paths", "metrics_path", "model_path", "figure_path"),
    "utils.core.common": ("count_parameters", "make_config", "make_configs",
                          "replace_fields", "resolve_smoke", "save_json", "load_json",
                          "seed_everything"),
    "utils.core.device": ("get_device", "runtime_info", "describe_runtime"),
})
