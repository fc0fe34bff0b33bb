"""Layer 4, ``utils.train``: one training loop and what feeds it.

``configs`` (each stage's run settings, apart from the models' architecture configs), ``loop``
(the loop every model trains with, and its one early-stopping rule), ``towers`` (where
CLIP's towers come from: the one factory that reads the step-1/2 checkpoints), ``features``
(frozen encoders run once, their features cached), ``classifier`` (steps 1 and 2), ``clip``
(step 3), ``captioner``, ``fusion``, ``distributed`` and ``clip_cli`` (several processes).
May import ``utils.core``, ``utils.data``, ``utils.models`` and ``utils.eval``.
"""

from utils.core.exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "utils.train.loop": ("TrainedRun", "train_epoch"),
    "utils.train.configs": ("CaptionerTrainConfig", "ClipTrainConfig", "CnnTrainConfig",
                            "FusionTrainConfig", "SmallBertTrainConfig"),
    "utils.train.towers": ("STEP1_CHECKPOINTS", "choose_image_tower", "create_clip",
                           "image_tower_overrides"),
    "utils.train.classifier": ("classifier_step", "run_summary", "save_classifier",
                               "train_image_classifier", "train_text_classifier"),
    "utils.train.clip": ("best_clip_epoch", "clip_step", "load_clip_frame", "make_clip_loaders",
                         "train_clip"),
    "utils.train.captioner": ("best_captioner_epoch", "dataset_maps", "initial_embeddings",
                              "load_caption_features", "load_caption_frame",
                              "make_caption_loaders", "references_of", "split_table",
                              "train_captioner"),
    "utils.train.fusion": ("course_images", "course_inputs", "flickr8k_features", "tag_inputs"),
})
