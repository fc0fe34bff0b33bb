"""The search page (Streamlit), served by ``make app`` / ``python -m utils.app``.

Text -> images and image -> texts over every CLIP checkpoint of ``models/``, with class and
split filters. The URL carries the query, the model and k (``?q=...&model=03_clip&k=5``), so a
search can be shared. Bad input (empty query, non-image upload, unreadable or non-CLIP file, no
checkpoint at all) gets a message in the page, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch
from matplotlib.figure import Figure

from utils.app.catalog import (
    CheckpointError,
    Entry,
    Searcher,
    describe_entry,
    galleries_for,
    load_gallery_file,
    load_searcher,
    scan_models,
)
from utils.app.safe import MAX_QUERY_CHARS, as_text, capped_query, safe_name
from utils.core import paths
from utils.data.course import CLASSES, SPLITS
from utils.eval.search import (
    Gallery,
    Hit,
    UploadError,
    embed_query_image,
    embed_query_text,
    image_mask,
    read_upload,
    search_images,
    search_texts,
)

DEFAULT_MODEL = "03_clip"
DEFAULT_K = 5
MAX_K = 50
COLUMNS = 5  # results per row of the grid
OWN_GALLERY = "the checkpoint's own gallery"
def file_stamp(path: Path) -> tuple[int, int]:
    """(mtime in ns, size): a cache key that changes when a file is rewritten."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@st.cache_data(show_spinner=False)
def cached_scan(folder: str, stamps: tuple) -> list[Entry]:
    """scan_models, redone only when a .pt file of the folder appears or changes."""
    return scan_models(Path(folder))


@st.cache_resource(show_spinner="Loading the model and its gallery…", max_entries=4)
def cached_searcher(path: str, stamp: tuple[int, int]) -> Searcher:
    """A loaded checkpoint, kept across reruns and sessions (its gallery is not re-encoded)."""
    return load_searcher(Path(path))


@st.cache_resource(show_spinner="Loading the gallery…", max_entries=4)
def cached_gallery(path: str, stamp: tuple[int, int], _searcher: Searcher, model: str
                   ) -> Gallery:
    """A gallery file (python -m utils.app.index) for the model named ``model``."""
    return load_gallery_file(Path(path), _searcher)


def list_models() -> list[Entry]:
    """Every .pt file of models/, probed (cached until a file changes)."""
    folder = paths.models_dir()
    files = sorted(folder.glob("*.pt")) if folder.is_dir() else []
    return cached_scan(str(folder), tuple((p.name, *file_stamp(p)) for p in files))


def read_url_state(names: list[str]) -> list[str]:
    """Seed the widgets from the URL once per session; returns notes on unusable values."""
    if st.session_state.get("url_read"):
        return []
    st.session_state["url_read"] = True
    params, notes = st.query_params, []
    query = params.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        notes.append(f"The query in the URL has {len(query)} characters: only its first "
                     f"{MAX_QUERY_CHARS} are kept.")
    st.session_state["q"] = capped_query(query)
    model = params.get("model")
    if model is not None and model not in names:
        named = f"Model {safe_name(model)}" if safe_name(model) else "The model of the URL"
        notes.append(f"{named} is not in {as_text(paths.models_dir())}: showing "
                     f"{as_text(default_model(names))} instead. Available: "
                     f"{as_text(', '.join(names))}.")
        model = None
    st.session_state["model"] = model or default_model(names)
    k = params.get("k", str(DEFAULT_K))
    if not k.isdigit() or not 1 <= int(k) <= MAX_K:
        shown = f"k={k}" if k.isdigit() and len(k) < 10 else "k"
        notes.append(f"{shown} in the URL is not a whole number from 1 to {MAX_K}: showing "
                     f"the top {DEFAULT_K}.")
        k = str(DEFAULT_K)
    st.session_state["k"] = int(k)
    return notes


def default_model(names: list[str]) -> str:
    """03_clip when present, else the first model."""
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def write_url_state(query: str, model: str, k: int) -> None:
    """Put the current search in the URL, so the address can be shared."""
    state = {"model": model, "k": str(k)}
    if query.strip():
        state["q"] = capped_query(query)
    if dict(st.query_params) != state:
        st.query_params.from_dict(state)


def show_no_model(entries: list[Entry]) -> None:
    """The page when models/ holds no CLIP checkpoint at all."""
    st.error(f"No CLIP checkpoint in {as_text(paths.models_dir())}: run `make run` first "
             "(notebook 03 writes models/03_clip.pt), or set MODELS_DIR to a folder holding one.")
    for entry in entries:
        st.caption(as_text(entry.problem or f"{entry.path.name}: a gallery file, not a model"))


def plot_score_histogram(scores: torch.Tensor, top: list[float]) -> Figure:
    """Histogram of every gallery score (N,) with the top-k scores marked in red."""
    fig = Figure(figsize=(9, 2.0))  # not pyplot: no global figure to close, no GUI backend
    ax = fig.subplots()
    ax.hist(scores.numpy(), bins=40, color="#8aa8c8")
    for score in top:
        ax.axvline(score, color="#d62728", linewidth=1.2)
    ax.set(xlabel="cosine score", ylabel="images",
           title=f"All {len(scores)} scores; red: the top {len(top)}")
    fig.tight_layout()
    return fig


def show_image_hits(hits: list[Hit]) -> None:
    """The top-k images in a grid, each with rank, score, caption, class and split."""
    for start in range(0, len(hits), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, hit in zip(columns, hits[start:start + COLUMNS], strict=False):
            with column, st.container(key=f"hit-{hit.rank}", border=True):
                if hit.image_path.is_file():
                    st.image(str(hit.image_path), width="stretch")
                else:
                    st.caption(f"(image not found: {as_text(hit.image_path)})")
                st.markdown(f"**#{hit.rank}** · score **{hit.score:.3f}**")
                st.text(f"{hit.caption} — {hit.label}, {hit.split}")  # plain: no Markdown


def show_caption_hits(hits: list[Hit]) -> None:
    """The top-k captions, each with rank, score and the class of its image."""
    for hit in hits:
        with st.container(key=f"caption-{hit.rank}", border=True):
            st.markdown(f"**#{hit.rank}** · score **{hit.score:.3f}**")
            st.text(f"{hit.caption}\n{hit.image_path.name} — {hit.label}, {hit.split}")


def text_to_images(searcher: Searcher, gallery: Gallery, k: int, keep: torch.Tensor) -> None:
    """The query box, then the top-k images and the histogram of all scores."""
    query = st.text_input("Describe the images you want", key="q",
                          placeholder="A group of cyclists", max_chars=MAX_QUERY_CHARS)
    if not query.strip():
        st.info("Type a query above (e.g. *A group of cyclists*) and press Enter.")
        return
    hits, scores = search_images(gallery, embed_query_text(searcher.model, searcher.tokenizer,
                                                           query), k, keep)
    if not hits:
        st.warning("No image passes the class and split filters: widen them in the sidebar.")
        return
    st.markdown(f"Top {len(hits)} of {int(keep.sum())} images for:")
    st.text(query)  # as typed: no Markdown
    show_image_hits(hits)
    st.pyplot(plot_score_histogram(scores[keep], [hit.score for hit in hits]))


def pick_query_image(gallery: Gallery, keep: torch.Tensor):
    """An uploaded image or a gallery image, as RGB PIL (None: nothing chosen yet)."""
    source = st.radio("Image", ["Upload an image", "Pick a gallery image"], horizontal=True,
                      key="image_source")
    if source == "Upload an image":
        upload = st.file_uploader("JPEG or PNG (any mode: RGB, RGBA, grey, palette, CMYK)",
                                  type=["jpg", "jpeg", "png"], key="upload")
        if upload is None:
            return None
        try:
            return read_upload(upload.getvalue(), upload.name)
        except UploadError as error:
            st.error(as_text(error))
            return None
    rows = keep.nonzero().flatten().tolist()
    if not rows:
        st.warning("No image passes the class and split filters: widen them in the sidebar.")
        return None
    row = st.selectbox("Gallery image", rows, key="gallery_image",
                       format_func=lambda r: gallery.index.image_paths[r])
    path = gallery.image_file(row)
    if not path.is_file():
        st.error(f"{as_text(path)}: image not found. Fix: `make data` (the gallery's images "
                 f"live under {as_text(gallery.root)}).")
        return None
    return read_upload(path.read_bytes(), path.name)


def image_to_texts(searcher: Searcher, gallery: Gallery, k: int, keep: torch.Tensor) -> None:
    """An image (uploaded or from the gallery), then the top-k captions."""
    image = pick_query_image(gallery, keep)
    if image is None:
        return
    left, right = st.columns([1, 3])
    left.image(image, caption="query image", width="stretch")
    hits = search_texts(gallery, embed_query_image(searcher.model, image), k, keep)
    with right:
        if not hits:
            st.warning("No caption passes the class and split filters: widen them.")
        show_caption_hits(hits)


def choose_gallery(searcher: Searcher, entry: Entry, entries: list[Entry]) -> Gallery:
    """The sidebar's gallery choice: the checkpoint's own, or a gallery file built for it."""
    files = galleries_for(entry, entries)
    if not files:
        return searcher.gallery
    labels = [OWN_GALLERY] + [f"{e.path.name} ({e.images} images)" for e in files]
    choice = st.sidebar.radio("Gallery", range(len(labels)), format_func=labels.__getitem__,
                              key=f"gallery-{entry.name}")
    if choice == 0:
        return searcher.gallery
    path = files[choice - 1].path
    try:
        return cached_gallery(str(path), file_stamp(path), searcher, entry.name)
    except CheckpointError as error:
        st.sidebar.warning(f"{as_text(error)} Searching the checkpoint's own gallery instead.")
        return searcher.gallery


def main() -> None:
    """The whole page."""
    st.set_page_config(page_title="CLIP search", layout="wide")
    st.title("CLIP search: text → images, image → texts")
    entries = list_models()
    models = [e for e in entries if e.kind == "clip"] + [
        e for e in entries if e.kind == "other"]
    if not any(e.kind == "clip" for e in entries):
        show_no_model(entries)
        st.stop()
    by_name = {e.name: e for e in models}
    names = list(by_name)
    for note in read_url_state(names):
        st.warning(note)
    if st.session_state.get("model") not in by_name:  # a file removed since the last run
        st.session_state["model"] = default_model(names)

    sidebar = st.sidebar
    name = sidebar.selectbox("Model · test R@5 · class-P@5 (text → image)", names,
                             key="model", format_func=lambda n: describe_entry(by_name[n]))
    k = sidebar.slider("Results (k)", 1, MAX_K, key="k")
    classes = sidebar.multiselect("Classes", CLASSES, key="classes", placeholder="all")
    splits = sidebar.multiselect("Splits", SPLITS, key="splits", placeholder="all")
    write_url_state(st.session_state.get("q", ""), name, k)

    entry = by_name[name]
    try:
        searcher = cached_searcher(str(entry.path), file_stamp(entry.path))
    except (CheckpointError, FileNotFoundError) as error:
        st.error(as_text(error))
        st.stop()
    gallery = choose_gallery(searcher, entry, entries)
    sidebar.caption(f"Searching {as_text(gallery.name)}, images under {as_text(gallery.root)}.")
    if not gallery.root.is_dir():
        st.warning(f"Images not found under {as_text(gallery.root)}: run `make data`. Results "
                   "show captions and scores only.")
    keep = image_mask(gallery, classes, splits)

    text_tab, image_tab = st.tabs(["Text → images", "Image → texts"])
    with text_tab:
        text_to_images(searcher, gallery, k, keep)
    with image_tab:
        image_to_texts(searcher, gallery, k, keep)


main()
