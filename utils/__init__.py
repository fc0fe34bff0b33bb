"""Shared code of the HAI923 CLIP project, in layers; imports go down the layers only.

    core         paths, seeding, device, atomic writes, checkpoints, pretrained-model loading
    data         the datasets (course subset, Flickr8k), PyTorch datasets, tokenizers, enrichment
    models       CNN, SmallBERT, pretrained text encoder, CLIP (with its contrastive loss)
    eval         classification and retrieval metrics, gallery index, search, zero-shot, plots
    train        the one training loop, cached features, the stages' training
    experiments  the notebooks' comparison runs (a run spec -> train -> evaluate -> a row)
    handin       beside the layers: team, notebook execution and PDF, report, the zip

``tests/test_layers.py`` enforces the direction. Submodules are imported explicitly
(``from utils.data.course import ...``), so importing ``utils`` stays cheap.
"""

__version__ = "0.3.0"
