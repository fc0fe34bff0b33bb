"""Caption enrichment: make the course's short captions longer without changing their meaning.

Two sources behind one interface (``Enricher.enrich(image_path, caption) -> str``):

- ``SiblingCaptionEnricher``: the image's other Flickr8k captions (5 per image; the course keeps
  one) appended to the original. Needs no model. The subset image is found back in Flickr8k by
  its file name, else by its caption text in ``Flickr8k.token.txt`` (image bytes settle ties),
  so it works on the course's own zip as well as on a subset built here.
- ``LLMEnricher``: a language model asked to extend the caption while keeping its meaning, via
  any OpenAI-compatible chat endpoint (``ChatClient``: OpenAI, Ollama, vLLM, LM Studio; set
  ENRICH_BASE_URL, ENRICH_MODEL, ENRICH_API_KEY) or a local ``transformers`` causal LM
  (``utils.models.llm.CausalLMGenerator``: SmolLM2-135M-Instruct offline by default), asked
  in batches.

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
from utils.data.words import normalize_caption, split_words

CACHE_COLUMNS = ["image_path", "label", "caption", "source", "accepted", "original", "reason",
                 "generated"]
OPTIONAL_COLUMNS = {"generated": ""}  # the raw answer, absent from caches of version 0.3


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
    "You enrich short image captions for training an image-text retrieval model. Copy the "
    "caption word for word, then continue it with one or two plausible details (how it looks, "
    "how the action is done), at most {max_words} words in all. Never change its "
    "words, never add a new person, animal or object. Answer with the enriched caption only."
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
    stems = [stem_word(w) for w in split_words(text) if w not in STOPWORDS]
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
    words = len(split_words(enriched))
    if words <= len(split_words(original)):
        return "not longer than the original"
    if words > max_words:
        return f"too long ({words} words > {max_words})"
    if has_class_word(original, label) and not has_class_word(enriched, label):
        return f"class word '{label}' lost"
    kept = set(content_words(enriched))
    lost = [w for w in content_words(original) if w not in kept]
    return f"content words lost: {', '.join(lost)}" if lost else ""


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
        count = len(split_words(caption))
        for sibling in self.siblings(image_path, caption):
            if count + len(split_words(sibling)) <= self.max_words:
                parts.append(as_sentence(sibling))
                count += len(split_words(sibling))
        return " ".join(parts)


# Worked examples shown to the model before each caption (few-shot): each copies the caption,
# then adds manner or appearance, and names no new object. Written by hand,
# not taken from the course data.
ENRICH_EXAMPLES = (
    ("A girl jumps into a pool .",
     "A girl jumps into a pool, splashing the water with a big smile."),
    ("Two men ride bikes on a road .",
     "Two men ride bikes on a road, side by side at a steady pace."),
    ("A dog carries a stick .",
     "A dog carries a stick, trotting proudly with its tail up."),
)


def user_message(caption: str, context: list[str] | None = None) -> str:
    """The user turn for one caption (optionally grounded by sibling captions)."""
    user = f"Caption: {caption.strip()}"
    if context:
        user += "\nOther descriptions of the same image:\n" + "\n".join(f"- {c}" for c in context)
    return user


def build_messages(caption: str, context: list[str] | None = None,
                   max_words: int = DEFAULT_MAX_WORDS, few_shot: bool = True) -> list[dict]:
    """Chat messages asking to extend ``caption``: the instructions, the worked examples
    (``few_shot``), then the caption."""
    messages = [{"role": "system", "content": ENRICH_SYSTEM_PROMPT.format(max_words=max_words)}]
    for original, enriched in ENRICH_EXAMPLES if few_shot else ():
        messages += [{"role": "user", "content": user_message(original)},
                     {"role": "assistant", "content": enriched}]
    return messages + [{"role": "user", "content": user_message(caption, context)}]


def prompt_digest(max_words: int = DEFAULT_MAX_WORDS, few_shot: bool = True) -> str:
    """8 hex digits naming the prompt (instructions and examples): part of the cache key."""
    text = json.dumps(build_messages("{caption}", None, max_words, few_shot), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


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

    @property
    def name(self) -> str:
        """The server's model name (part of the enrichment cache key)."""
        return self.model

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


class LLMEnricher:
    """Ask a generator (ChatClient or utils.models.llm.CausalLMGenerator) to extend each
    caption. Its ``name`` (the cache key's source) says the model and the prompt: by default
    ``llm:<model>:<prompt digest>``, so a new model or prompt never reuses old answers."""

    def __init__(self, generate: Callable[[list[dict]], str], name: str | None = None,
                 context: SiblingCaptionEnricher | None = None,
                 max_words: int = DEFAULT_MAX_WORDS, few_shot: bool = True):
        model = getattr(generate, "name", "model")  # ChatClient and CausalLMGenerator have one
        self.generate, self.context = generate, context
        self.max_words, self.few_shot = max_words, few_shot
        grounded = ":siblings" if context is not None else ""
        self.name = name or f"llm:{model}:{prompt_digest(max_words, few_shot)}{grounded}"
        self.batch_size = getattr(generate, "batch_size", 1)

    def messages(self, image_path: str, caption: str) -> list[dict]:
        """The conversation for one caption, grounded by its sibling captions when asked."""
        siblings = None
        if self.context is not None:
            try:
                siblings = self.context.siblings(image_path, caption)
            except EnrichmentUnavailable:
                siblings = None
        return build_messages(caption, siblings, self.max_words, self.few_shot)

    def enrich(self, image_path: str, caption: str) -> str:
        """The model's extension of ``caption``."""
        return clean_generation(self.generate(self.messages(image_path, caption)))

    def enrich_batch(self, pairs: list[tuple[str, str]]) -> list[str]:
        """Extensions of several (image_path, caption) pairs, in one call when the generator
        answers batches."""
        conversations = [self.messages(path, caption) for path, caption in pairs]
        if hasattr(self.generate, "generate_batch"):
            return [clean_generation(t) for t in self.generate.generate_batch(conversations)]
        return [clean_generation(self.generate(m)) for m in conversations]


def read_cache(path: str | Path) -> pd.DataFrame:
    """The enrichment cache (empty frame when absent); a damaged file raises with the fix."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=CACHE_COLUMNS)
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    frame = frame.assign(**{k: v for k, v in OPTIONAL_COLUMNS.items() if k not in frame})
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


def enrich_row(enricher: Enricher, row, max_words: int, text: str | None = None) -> dict:
    """One cache row: the enriched caption if the guards accept it, else the original.
    ``text``: the enricher's answer when it was already asked (a batch); None: ask it now."""
    try:
        text = enricher.enrich(row.image_path, row.caption) if text is None else text
        reason = check_enrichment(row.caption, text, row.label, max_words)
    except EnrichmentUnavailable as error:
        text, reason = "", f"unavailable: {error}"
    accepted = not reason
    return {"image_path": row.image_path, "label": row.label,
            "caption": text if accepted else row.caption, "source": enricher.name,
            "accepted": accepted, "original": row.caption, "reason": reason, "generated": text}


def enrich_chunk(enricher: Enricher, rows: list, max_words: int) -> list[dict]:
    """Cache rows for several captions: one call when the enricher answers batches
    (``enrich_batch``, e.g. a local LLM), else one call per caption."""
    if not hasattr(enricher, "enrich_batch"):
        return [enrich_row(enricher, row, max_words) for row in rows]
    texts = enricher.enrich_batch([(row.image_path, row.caption) for row in rows])
    return [enrich_row(enricher, row, max_words, text)
            for row, text in zip(rows, texts, strict=True)]


def enrich_captions(frame: pd.DataFrame, enricher: Enricher, cache: str | Path,
                    max_words: int = DEFAULT_MAX_WORDS, save_every: int = 25,
                    progress: bool = True) -> pd.DataFrame:
    """Enrich every (image_path, label, caption) row, reusing and extending the cache CSV
    (the rows of the same ``enricher.name``: a new model or prompt is a new name)."""

    done = read_cache(cache)
    done = done[done["source"] == enricher.name]
    rows = {(r["image_path"], r["original"]): r for r in done.to_dict("records")}
    todo = [r for r in frame.itertuples(index=False) if (r.image_path, r.caption) not in rows]
    size = max(1, int(getattr(enricher, "batch_size", 1)))
    chunks = [todo[start:start + size] for start in range(0, len(todo), size)]
    try:
        with progress_bar(total=len(todo), desc=f"enrich ({enricher.name})",
                          disable=not progress) as bar:
            for number, chunk in enumerate(chunks):
                for row, record in zip(chunk, enrich_chunk(enricher, chunk, max_words),
                                       strict=True):
                    rows[(row.image_path, row.caption)] = record
                bar.update(len(chunk))
                if (number * size) // save_every < ((number + 1) * size) // save_every:
                    write_cache(cache, pd.DataFrame(list(rows.values()), columns=CACHE_COLUMNS))
    finally:  # an interrupted run keeps what it paid for
        if todo:
            write_cache(cache, pd.DataFrame(list(rows.values()), columns=CACHE_COLUMNS))
    keys = zip(frame["image_path"], frame["caption"], strict=True)
    return pd.DataFrame([rows[k] for k in keys], columns=CACHE_COLUMNS)


def word_count(text: str) -> int:
    """Number of words of a text (the project's word rule)."""
    return len(split_words(text))


def enrichment_summary(enriched: pd.DataFrame) -> dict:
    """Counts and lengths: accepted/rejected, reasons, words per caption before and after."""
    reasons = enriched.loc[~enriched["accepted"], "reason"].str.split(":").str[0]
    return {
        "rows": len(enriched), "accepted": int(enriched["accepted"].sum()),
        "rejected": int((~enriched["accepted"]).sum()),
        "rejected_by_reason": reasons.value_counts().to_dict(),
        "words_original_mean": float(enriched["original"].map(word_count).mean()),
        "words_enriched_mean": float(enriched["caption"].map(word_count).mean()),
        "words_enriched_max": int(enriched["caption"].map(word_count).max()),
    }


def write_caption_folder(enriched: pd.DataFrame, root: str | Path,
                         folder: str = "captions_enriched") -> Path:
    """``root/folder/<image stem>.txt``, one caption per line, as captions/ holds the originals."""
    out = Path(root) / folder
    for image_path, group in enriched.groupby("image_path", sort=True):
        write_text(out / f"{Path(image_path).stem}.txt", "\n".join(group["caption"]) + "\n")
    return out


def apply_enrichment(frame: pd.DataFrame, enriched: pd.DataFrame, keep_missing: bool = False
                     ) -> pd.DataFrame:
    """``frame`` (any columns, split included) with each caption replaced by its enrichment;
    ``keep_missing``: captions not enriched (a part was asked) keep their original text."""
    lookup = dict(zip(zip(enriched["image_path"], enriched["original"], strict=True),
                      enriched["caption"], strict=True))
    keys = list(zip(frame["image_path"], frame["caption"], strict=True))
    if keep_missing:
        lookup = {k: lookup.get(k, k[1]) for k in keys}
    missing = [k for k in keys if k not in lookup]
    if missing:
        raise KeyError(f"{len(missing)} caption(s) not enriched yet, e.g. {missing[0]}: run "
                       "enrich_captions on this frame first")
    return frame.assign(caption=[lookup[k] for k in keys])


def choose_text_length(texts: list[str], cap: int = 64, multiple: int = 8) -> int:
    """Token length for SmallBERT: the longest caption (words), rounded up, at most ``cap``."""
    longest = max(len(split_words(t)) for t in texts)
    return min(cap, -(-longest // multiple) * multiple)


def examples_table(enriched: pd.DataFrame, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """A few (label, original, enriched, accepted) rows, one class after another."""
    sample = enriched.groupby("label").sample(1, random_state=seed).head(n)
    return sample[["label", "original", "caption", "accepted"]].rename(
        columns={"caption": "enriched"}).reset_index(drop=True)
