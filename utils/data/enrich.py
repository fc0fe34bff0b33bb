"""Caption enrichment: make the course's short captions longer without changing their meaning.

Two sources behind one interface (``Enricher.enrich(image_path, caption) -> str``):

- ``SiblingCaptionEnricher``: the image's other Flickr8k captions (5 per image; the course keeps
  one) appended to the original. Needs no model. The subset image is found back in Flickr8k by
  its file name, else by its caption text in ``Flickr8k.token.txt`` (image bytes settle ties),
  so it works on the course's own zip as well as on a subset built here.
- ``LLMEnricher``: a language model asked to extend the caption while keeping its meaning, via
  any OpenAI-compatible chat endpoint (``ChatClient``: OpenAI, Ollama, vLLM, LM Studio; set
  ENRICH_BASE_URL, ENRICH_MODEL, ENRICH_API_KEY) or a local ``transformers`` instruction model
  (``TransformersGenerator``).

Every enriched text passes ``check_enrichment`` (guards); a rejected one keeps the original and
is counted. ``enrich_captions`` caches results in a CSV written atomically and resumes: a rerun
only asks the enricher for rows that are not done yet.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import pandas as pd

from utils.core.common import atomic_path, write_text
from utils.core.progress import progress as progress_bar
from utils.data.course import CLASS_PATTERNS
from utils.data.flickr8k import FLICKR_IMAGES, TOKEN_FILE, read_flickr8k

CACHE_COLUMNS = ["image_path", "label", "caption", "source", "accepted", "original", "reason"]


DEFAULT_MAX_WORDS = 40  # fits SmallBERT at length 64 and MiniLM at 64 wordpieces


# Function words: a word of the original that is NOT in this list counts as a content word
# (nouns, but also verbs, adjectives, numbers) and must survive enrichment. This over-approximates
# "every noun" on purpose: the guard is stricter than needed, never looser.
STOPWORDS = frozenset("""
a an the this that these those some any each every another other such
i me my we us our you your he him his she her it its they them their one ones
is are was were be been being am has have had having do does did doing will would can could
shall should may might must
and or but nor so yet if then than as because while when where whereas though although
of in on at to for from by with without into onto upon over under above below between among
through across along around about against behind beyond during toward towards near off out up
down away back together there here also very too just only still even not no
what which who whom whose how why all both either neither
""".split())


ENRICH_SYSTEM_PROMPT = (
    "You enrich short image captions for training an image-text retrieval model. Rewrite the "
    "caption as one or two fluent sentences of at most {max_words} words that keep its meaning: "
    "keep every noun of the original caption word for word, add only details supported by the "
    "caption or by the other descriptions of the same image, never invent objects. Answer with "
    "the enriched caption only, no preamble, no quotes."
)


class EnrichError(RuntimeError):
    """An enrichment source failed (bad answer, too many retries)."""


class EndpointUnreachableError(EnrichError, ConnectionError):
    """The OpenAI-compatible endpoint cannot be reached at all."""


class EnrichmentUnavailable(LookupError):
    """The source has nothing for this row (e.g. image not in Flickr8k): keep the original."""


class Enricher(Protocol):
    """Anything that turns (image, caption) into a longer caption with the same meaning."""

    name: str

    def enrich(self, image_path: str, caption: str) -> str:
        """The enriched caption of ``image_path`` (relative to the subset root)."""
        ...


def words_of(text: str) -> list[str]:
    """Lower-case words of a text (letters and digits; punctuation dropped)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def stem_word(word: str) -> str:
    """A crude singular form, so that 'dog' and 'dogs' or 'puppy' and 'puppies' match."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """Content words of a text (not in STOPWORDS), stemmed, in order, without repeats."""
    stems = [stem_word(w) for w in words_of(text) if w not in STOPWORDS]
    return list(dict.fromkeys(stems))


def has_class_word(text: str, label: str) -> bool:
    """True when ``text`` names the class (utils.data.CLASS_WORDS: dogs, bicycle, ...)."""
    pattern = CLASS_PATTERNS.get(label)
    if pattern is None:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(CLASS_PATTERNS)}")
    return bool(pattern.search(text))


def check_enrichment(original: str, enriched: str, label: str,
                     max_words: int = DEFAULT_MAX_WORDS) -> str:
    """Why ``enriched`` is rejected ('' when accepted): class word, content words, length."""
    if not enriched or not enriched.strip():
        return "empty"
    if len(words_of(enriched)) <= len(words_of(original)):
        return "not longer than the original"
    if len(words_of(enriched)) > max_words:
        return f"too long ({len(words_of(enriched))} words > {max_words})"
    if has_class_word(original, label) and not has_class_word(enriched, label):
        return f"class word '{label}' lost"
    kept = set(content_words(enriched))
    lost = [w for w in content_words(original) if w not in kept]
    return f"content words lost: {', '.join(lost)}" if lost else ""


def normalize_caption(text: str) -> str:
    """Caption key for matching: lower-case words joined by single spaces."""
    return " ".join(words_of(text))


def read_flickr_captions(flickr8k: str | Path) -> dict[str, list[str]]:
    """Flickr8k's captions per image file: {file: [caption #0, #1, ...]} (via utils.data)."""
    frame = read_flickr8k(Path(flickr8k)).sort_values(["image", "caption_index"], kind="stable")
    return frame.groupby("image", sort=False)["caption"].agg(list).to_dict()


def as_sentence(caption: str) -> str:
    """One caption as a sentence: trimmed, capitalised, ending with a full stop."""
    text = re.sub(r"\s+([.,!?;:])", r"\1", caption.strip()).rstrip(" .")
    return text[:1].upper() + text[1:] + "." if text else ""


def file_digest(path: Path) -> str:
    """MD5 of a file's bytes (to tell apart images sharing one caption)."""
    return hashlib.md5(path.read_bytes()).hexdigest()


class SiblingCaptionEnricher:
    """Original caption + the image's other Flickr8k captions, within a word budget."""

    name = "flickr8k_siblings"

    def __init__(self, flickr8k: str | Path, root: str | Path | None = None,
                 max_words: int = DEFAULT_MAX_WORDS):
        self.flickr8k = Path(flickr8k)
        self.root = Path(root) if root is not None else None
        self.max_words = max_words
        self.captions = read_flickr_captions(self.flickr8k)
        self.index: dict[str, list[str]] = {}
        for file, texts in self.captions.items():
            for text in dict.fromkeys(normalize_caption(t) for t in texts):
                self.index.setdefault(text, []).append(file)

    def find_file(self, image_path: str, caption: str) -> str:
        """The Flickr8k file of a subset image: by name, else by caption text and bytes."""
        key = normalize_caption(caption)
        name = Path(image_path).name
        if key in {normalize_caption(t) for t in self.captions.get(name, [])}:
            return name
        candidates = self.index.get(key, [])
        if len(candidates) > 1 and self.root is not None:
            digest = file_digest(self.root / image_path)
            folder = self.flickr8k / FLICKR_IMAGES
            candidates = [f for f in candidates if file_digest(folder / f) == digest]
        if len(candidates) != 1:
            why = "not found in" if not candidates else "ambiguous in"
            raise EnrichmentUnavailable(f"{image_path}: caption {why} {TOKEN_FILE}")
        return candidates[0]

    def siblings(self, image_path: str, caption: str) -> list[str]:
        """The image's other Flickr8k captions (the original excluded)."""
        key = normalize_caption(caption)
        others = self.captions[self.find_file(image_path, caption)]
        return [c for c in others if normalize_caption(c) != key]

    def enrich(self, image_path: str, caption: str) -> str:
        """Original first, then siblings in corpus order while the word budget allows."""
        parts = [as_sentence(caption)]
        count = len(words_of(caption))
        for sibling in self.siblings(image_path, caption):
            if count + len(words_of(sibling)) <= self.max_words:
                parts.append(as_sentence(sibling))
                count += len(words_of(sibling))
        return " ".join(parts)


def build_messages(caption: str, context: list[str] | None = None,
                   max_words: int = DEFAULT_MAX_WORDS) -> list[dict]:
    """Chat messages asking to extend ``caption`` (optionally grounded by sibling captions)."""
    user = f"Caption: {caption.strip()}"
    if context:
        user += "\nOther descriptions of the same image:\n" + "\n".join(f"- {c}" for c in context)
    return [{"role": "system", "content": ENRICH_SYSTEM_PROMPT.format(max_words=max_words)},
            {"role": "user", "content": user}]


def clean_generation(text: str) -> str:
    """The caption inside a model's answer: first paragraph, no label, no quotes."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    first = paragraphs[0] if paragraphs else ""
    first = re.sub(r"^(enriched caption|caption|description)\s*:\s*", "", first, flags=re.I)
    return " ".join(first.strip().strip('"“”\'').split())


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date); None when absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class ChatClient:
    """Minimal OpenAI-compatible ``/chat/completions`` client (stdlib urllib), with back-off."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5, base_delay: float = 1.0,
                 max_delay: float = 60.0, sleep: Callable[[float], None] = time.sleep):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.max_retries, self.base_delay, self.max_delay = max_retries, base_delay, max_delay
        self.sleep = sleep

    @classmethod
    def from_env(cls, **kwargs) -> ChatClient:
        """Client from ENRICH_BASE_URL, ENRICH_MODEL and (optional) ENRICH_API_KEY."""
        base_url, model = os.environ.get("ENRICH_BASE_URL"), os.environ.get("ENRICH_MODEL")
        if not base_url or not model:
            raise EnrichError(
                "Set ENRICH_BASE_URL (e.g. http://localhost:11434/v1 for Ollama, "
                "https://api.openai.com/v1 for OpenAI) and ENRICH_MODEL (e.g. llama3.2, "
                "gpt-4o-mini); ENRICH_API_KEY if the server needs one."
            )
        return cls(base_url, model, os.environ.get("ENRICH_API_KEY"), **kwargs)

    def __call__(self, messages: list[dict]) -> str:
        """The assistant's answer to ``messages``."""
        payload = {"model": self.model, "messages": messages, "temperature": 0.2,
                   "max_tokens": 160}
        answer = self.post(payload)
        try:
            return answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise EnrichError(f"{self.url}: unexpected answer {str(answer)[:200]}") from error

    def post(self, payload: dict) -> dict:
        """POST JSON with retries on HTTP 429/5xx and timeouts (exponential, Retry-After)."""
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self.post_once(payload)
            except urllib.error.HTTPError as error:
                if error.code != 429 and error.code < 500:
                    body = error.read().decode("utf-8", "replace")[:300]
                    raise EnrichError(f"{self.url}: HTTP {error.code} {body}") from error
                last = f"HTTP {error.code}"
                wait = parse_retry_after(error.headers.get("Retry-After"))
            except (TimeoutError, ConnectionResetError) as error:
                last, wait = f"{type(error).__name__} after {self.timeout}s or less", None
            if attempt < self.max_retries:
                self.sleep(self.retry_delay(attempt, wait))
        raise EnrichError(f"{self.url}: gave up after {self.max_retries + 1} attempts ({last})")

    def retry_delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After if given, else 2^attempt."""
        delay = retry_after if retry_after is not None else self.base_delay * 2**attempt
        return min(delay, self.max_delay)

    def post_once(self, payload: dict) -> dict:
        """One POST; an unreachable server raises EndpointUnreachableError with the fix."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(payload).encode("utf-8"), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise TimeoutError(str(error.reason)) from error
            raise EndpointUnreachableError(
                f"Cannot reach the enrichment endpoint {self.url} ({error.reason}). Start the "
                "server (Ollama: `ollama serve`; vLLM: `vllm serve MODEL`; LM Studio: start its "
                "local server), or fix ENRICH_BASE_URL, or unset it to skip the LLM section."
            ) from error


class TransformersGenerator:
    """A local ``transformers`` instruction model (text-generation pipeline) as a generator."""

    def __init__(self, model: str | None = None, max_new_tokens: int = 96,
                 device: str | int | None = None, pipeline=None):
        if pipeline is None:
            from transformers import pipeline as make_pipeline

            pipeline = make_pipeline("text-generation", model=model, device=device)
        self.pipeline, self.max_new_tokens = pipeline, max_new_tokens
        self.model_name = model or getattr(pipeline.model, "name_or_path", "local")

    def __call__(self, messages: list[dict]) -> str:
        """Greedy answer to ``messages`` (chat template if the tokenizer has one)."""
        prompt = messages
        if not getattr(self.pipeline.tokenizer, "chat_template", None):
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\nEnriched caption:"
        out = self.pipeline(prompt, max_new_tokens=self.max_new_tokens, do_sample=False,
                            return_full_text=False)
        text = out[0]["generated_text"]
        return text[-1]["content"] if isinstance(text, list) else text


class LLMEnricher:
    """Ask a generator (ChatClient or TransformersGenerator) to extend each caption."""

    def __init__(self, generate: Callable[[list[dict]], str], name: str,
                 context: SiblingCaptionEnricher | None = None,
                 max_words: int = DEFAULT_MAX_WORDS):
        self.generate, self.name = generate, name
        self.context, self.max_words = context, max_words

    def enrich(self, image_path: str, caption: str) -> str:
        """The model's extension of ``caption``, grounded by sibling captions when available."""
        siblings = None
        if self.context is not None:
            try:
                siblings = self.context.siblings(image_path, caption)
            except EnrichmentUnavailable:
                siblings = None
        return clean_generation(self.generate(build_messages(caption, siblings, self.max_words)))


def read_cache(path: str | Path) -> pd.DataFrame:
    """The enrichment cache (empty frame when absent); a damaged file raises with the fix."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=CACHE_COLUMNS)
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    missing = sorted(set(CACHE_COLUMNS) - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; delete the file to rebuild it")
    frame["accepted"] = frame["accepted"].map({"True": True, "False": False})
    if frame["accepted"].isna().any():
        line = int(frame.index[frame["accepted"].isna()][0]) + 2
        raise ValueError(f"{path}, line {line}: 'accepted' must be True or False; "
                         "delete the file to rebuild it")
    return frame[CACHE_COLUMNS]


def write_cache(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write the cache CSV atomically (never a half-written file)."""
    with atomic_path(path) as tmp:
        frame[CACHE_COLUMNS].to_csv(tmp, index=False)
    return Path(path)


def enrich_row(enricher: Enricher, row, max_words: int) -> dict:
    """One cache row: the enriched caption if the guards accept it, else the original."""
    text = ""
    try:
        text = enricher.enrich(row.image_path, row.caption)
        reason = check_enrichment(row.caption, text, row.label, max_words)
    except EnrichmentUnavailable as error:
        reason = f"unavailable: {error}"
    accepted = not reason
    return {"image_path": row.image_path, "label": row.label,
            "caption": text if accepted else row.caption, "source": enricher.name,
            "accepted": accepted, "original": row.caption, "reason": reason}


def enrich_captions(frame: pd.DataFrame, enricher: Enricher, cache: str | Path,
                    max_words: int = DEFAULT_MAX_WORDS, save_every: int = 25,
                    progress: bool = True) -> pd.DataFrame:
    """Enrich every (image_path, label, caption) row, reusing and extending the cache CSV."""

    done = read_cache(cache)
    done = done[done["source"] == enricher.name]
    rows = {(r["image_path"], r["original"]): r for r in done.to_dict("records")}
    todo = [r for r in frame.itertuples(index=False) if (r.image_path, r.caption) not in rows]
    try:
        for number, row in enumerate(progress_bar(todo, desc=f"enrich ({enricher.name})",
                                          disable=not progress), start=1):
            rows[(row.image_path, row.caption)] = enrich_row(enricher, row, max_words)
            if number % save_every == 0:
                write_cache(cache, pd.DataFrame(list(rows.values()), columns=CACHE_COLUMNS))
    finally:  # an interrupted run keeps what it paid for
        if todo:
            write_cache(cache, pd.DataFrame(list(rows.values()), columns=CACHE_COLUMNS))
    keys = zip(frame["image_path"], frame["caption"], strict=True)
    return pd.DataFrame([rows[k] for k in keys], columns=CACHE_COLUMNS)


def enrichment_summary(enriched: pd.DataFrame) -> dict:
    """Counts and lengths: accepted/rejected, reasons, words per caption before and after."""
    reasons = enriched.loc[~enriched["accepted"], "reason"].str.split(":").str[0]
    return {
        "rows": len(enriched), "accepted": int(enriched["accepted"].sum()),
        "rejected": int((~enriched["accepted"]).sum()),
        "rejected_by_reason": reasons.value_counts().to_dict(),
        "words_original_mean": float(enriched["original"].map(lambda t: len(words_of(t))).mean()),
        "words_enriched_mean": float(enriched["caption"].map(lambda t: len(words_of(t))).mean()),
        "words_enriched_max": int(enriched["caption"].map(lambda t: len(words_of(t))).max()),
    }


def write_caption_folder(enriched: pd.DataFrame, root: str | Path,
                         folder: str = "captions_enriched") -> Path:
    """``root/folder/<image stem>.txt``, one caption per line, as captions/ holds the originals."""
    out = Path(root) / folder
    for image_path, group in enriched.groupby("image_path", sort=True):
        write_text(out / f"{Path(image_path).stem}.txt", "\n".join(group["caption"]) + "\n")
    return out


def apply_enrichment(frame: pd.DataFrame, enriched: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (any columns, split included) with each caption replaced by its enrichment."""
    lookup = dict(zip(zip(enriched["image_path"], enriched["original"], strict=True),
                      enriched["caption"], strict=True))
    keys = list(zip(frame["image_path"], frame["caption"], strict=True))
    missing = [k for k in keys if k not in lookup]
    if missing:
        raise KeyError(f"{len(missing)} caption(s) not enriched yet, e.g. {missing[0]}: run "
                       "enrich_captions on this frame first")
    return frame.assign(caption=[lookup[k] for k in keys])


def choose_text_length(texts: list[str], cap: int = 64, multiple: int = 8) -> int:
    """Token length for SmallBERT: the longest caption (words), rounded up, at most ``cap``."""
    longest = max(len(words_of(t)) for t in texts)
    return min(cap, -(-longest // multiple) * multiple)


def examples_table(enriched: pd.DataFrame, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """A few (label, original, enriched, accepted) rows, one class after another."""
    sample = enriched.groupby("label").sample(1, random_state=seed).head(n)
    return sample[["label", "original", "caption", "accepted"]].rename(
        columns={"caption": "enriched"}).reset_index(drop=True)
