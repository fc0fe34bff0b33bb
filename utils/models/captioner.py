"""Notebook 06: an image captioner with soft visual attention (Show, Attend and Tell, Xu et al.
2015) over the frozen feature map of an ImageNet CNN.

The R = 49 regions (C = 1280 channels) of EfficientNet-Lite0's last map are projected to
``feature_dim``; at each step an LSTM reads the previous word's embedding and an attention
context (additive attention over the regions, scaled by a learnt gate), and predicts the next
word. Decoding: greedy, or beam search with length normalisation. Saved as one checkpoint
(weights, config, vocabulary) and rebuilt from it alone.

``python -m utils.models.captioner caption IMAGE [--checkpoint models/06_captioner.pt]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from utils.core import paths
from utils.core.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from utils.core.cli import positive_int, run_command
from utils.core.common import config_from_dict, require_positive
from utils.core.device import get_device
from utils.data.captions import Vocabulary
from utils.data.images import ImageError, image_error
from utils.models.cnn import EFFICIENTNET_LITE
from utils.models.features import compute_features

CAPTIONER_CHECKPOINT = "06_captioner.pt"


CHANNELS = 1280  # channels of the last convolutional map of every EfficientNet-Lite


@dataclass
class CaptionerConfig:
    """The architecture of a captioner and how the saved model decodes (stored in its
    checkpoint; the caption command reads it). How it is trained is
    ``utils.train.configs.CaptionerTrainConfig``."""

    encoder: str = "efficientnet_lite0"  # frozen ImageNet CNN whose last map gives the regions
    feature_dim: int = 256  # each region's C channels projected to this size
    attention_dim: int = 256  # size of the additive attention's hidden layer
    embed_dim: int = 50  # word embedding size (50 = GloVe 6B-50d)
    hidden_dim: int = 384  # LSTM state size
    dropout: float = 0.2  # on the projected regions and before the output layer (0.5 learns
    # slower: dev BLEU-4 after one epoch 0.093 at 0.5 and lr 2e-3, 0.103 at 0.2 and lr 4e-3)
    beam_size: int = 3  # beam width of the test captions (1 = greedy)
    max_caption_length: int = 20  # longest generated caption (words)

    def __post_init__(self) -> None:
        """Check the encoder name and the sizes."""
        require_positive(self, ("beam_size", "max_caption_length", "hidden_dim", "feature_dim",
                                "attention_dim", "embed_dim"))
        if self.encoder not in EFFICIENTNET_LITE:
            raise ValueError(f"CaptionerConfig.encoder={self.encoder!r}: choose one of "
                             f"{sorted(EFFICIENTNET_LITE)}")


class SoftAttention(nn.Module):
    """Additive (Bahdanau) attention of a hidden state over the regions of an image."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.key = nn.Linear(feature_dim, attention_dim)
        self.query = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, features: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B,R,D), keys = self.key(features) (B,R,A), hidden (B,H), mask (B,R) bool
        (False: region absent) -> context (B,D), weights (B,R) summing to 1 over the regions."""
        scores = self.score(torch.tanh(keys + self.query(hidden).unsqueeze(1))).squeeze(2)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores.float(), dim=1).to(features.dtype)
        return (weights.unsqueeze(2) * features).sum(dim=1), weights


class AttentionCaptioner(nn.Module):
    """Region features -> words, one LSTM step per word, attending over the regions."""

    def __init__(self, config: CaptionerConfig, vocab_size: int, channels: int,
                 embeddings: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.project = nn.Sequential(nn.Linear(channels, config.feature_dim), nn.ReLU(),
                                     nn.Dropout(config.dropout))
        self.attention = SoftAttention(config.feature_dim, config.hidden_dim,
                                       config.attention_dim)
        self.gate = nn.Linear(config.hidden_dim, 1)  # beta: how much of the context to read
        self.embed = nn.Embedding(vocab_size, config.embed_dim)
        if embeddings is not None:
            self.embed.weight.data.copy_(embeddings)
        self.init_h = nn.Linear(config.feature_dim, config.hidden_dim)
        self.init_c = nn.Linear(config.feature_dim, config.hidden_dim)
        self.lstm = nn.LSTMCell(config.embed_dim + config.feature_dim, config.hidden_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_dim, vocab_size)

    def encode(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Feature maps (B,R,C) -> projected regions (B,R,D), keys (B,R,A), state (h, c)."""
        features = self.project(maps)
        mean = features.mean(dim=1)
        state = (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        return features, self.attention.key(features), state

    def step(self, words: torch.Tensor, state: tuple, features: torch.Tensor,
             keys: torch.Tensor, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, tuple, torch.Tensor]:
        """Previous words (B,), state (h, c) each (B,H), features (B,R,D), keys (B,R,A)
        -> next-word logits (B,V), new state, attention weights (B,R)."""
        state, weights = self.advance(words, state, features, keys, mask)
        return self.output(self.dropout(state[0])), state, weights

    def advance(self, words: torch.Tensor, state: tuple, features: torch.Tensor,
                keys: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[tuple, torch.Tensor]:
        """One LSTM step without the output layer: previous words (B,), state (h, c) each
        (B,H), features (B,R,D), keys (B,R,A) -> new state, attention weights (B,R)."""
        context, weights = self.attention(features, keys, state[0], mask)
        context = torch.sigmoid(self.gate(state[0])) * context
        return self.lstm(torch.cat([self.embed(words), context], dim=1), state), weights

    def forward(self, maps: torch.Tensor, tokens: torch.Tensor, pad_id: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: maps (B,R,C), tokens (B,K,T+1) (K captions of each image, K = 1
        for one) from <start> -> logits (B*K,T,V) of the next tokens, attention (B*K,T,R);
        both are 0 where the target is <pad> (trailing), whose steps are not computed."""
        features, keys, state = self.encode(maps)
        repeat = tokens.shape[1]  # regions projected once per image, shared by its K captions
        features, keys, h, c = (x.repeat_interleave(repeat, dim=0)
                                for x in (features, keys, *state))
        state = (h, c)
        tokens = tokens.flatten(0, 1)
        lengths = (tokens[:, 1:] != pad_id).sum(dim=1)  # targets of each caption
        order = lengths.argsort(descending=True, stable=True)  # longest first
        logits, weights = self.teacher_forcing(tokens[order], lengths[order],
                                               (state[0][order], state[1][order]),
                                               features[order], keys[order])
        restore = order.argsort()
        return logits[restore], weights[restore]

    def teacher_forcing(self, tokens: torch.Tensor, lengths: torch.Tensor, state: tuple,
                        features: torch.Tensor, keys: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions sorted by decreasing length (N,T+1): step t runs only the captions still
        going (about half the work of padded steps) -> logits (N,T,V), weights (N,T,R)."""
        hidden, weights = [], []
        h, c = state
        steps = torch.arange(tokens.shape[1] - 1, device=lengths.device)
        # Captions still going at each step, read back once per batch (not once per step).
        going_at = (lengths.unsqueeze(0) > steps.unsqueeze(1)).sum(dim=1).tolist()
        for t, n in enumerate(going_at):
            (h_n, c_n), alpha = self.advance(tokens[:n, t], (h[:n], c[:n]), features[:n],
                                             keys[:n])
            h, c = torch.cat([h_n, h[n:]]), torch.cat([c_n, c[n:]])
            hidden.append(F.pad(h_n, (0, 0, 0, len(tokens) - n)))
            weights.append(F.pad(alpha, (0, 0, 0, len(tokens) - n)))
        # The output layer runs once over every step: writing each step's (n,V) logits into a
        # (N,T,V) tensor made backward copy that whole tensor at each step (4x the forward).
        going = (torch.arange(len(hidden), device=lengths.device) < lengths[:, None])[..., None]
        logits = self.output(self.dropout(torch.stack(hidden, dim=1))) * going
        return logits, torch.stack(weights, dim=1)


def caption_loss(logits: torch.Tensor, weights: torch.Tensor, targets: torch.Tensor,
                 pad_id: int, alpha_c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B,T,V), weights (B,T,R), targets (B,T) -> (cross-entropy + alpha_c x doubly
    stochastic penalty, the cross-entropy alone), both means over the non-<pad> targets."""
    keep = targets != pad_id
    cross_entropy = F.cross_entropy(logits[keep].float(), targets[keep])
    captions = keep.any(dim=1)
    attended = (weights.float() * keep.unsqueeze(2)).sum(dim=1)[captions]  # (B',R)
    penalty = ((1.0 - attended) ** 2).mean()
    return cross_entropy + alpha_c * penalty, cross_entropy


@dataclass
class Caption:
    """A generated caption: word ids (without <start>, up to <end> excluded), attention
    weights (words + 1, R) of each emitted token, <end> included, and the mean log-prob."""

    ids: list[int]
    weights: torch.Tensor
    score: float


@torch.no_grad()
def greedy_decode(model: AttentionCaptioner, maps: torch.Tensor, vocabulary: Vocabulary,
                  max_length: int) -> list[Caption]:
    """Feature maps (B,R,C) -> B captions, the most likely word at each step."""
    model.eval()
    features, keys, state = model.encode(maps)
    words = torch.full((len(maps),), vocabulary.start_id, dtype=torch.long, device=maps.device)
    chosen, weights, logps = [], [], []
    for _ in range(max_length):
        logits, state, alpha = model.step(words, state, features, keys)
        logp, words = torch.log_softmax(logits.float(), dim=1).max(dim=1)
        chosen.append(words)
        weights.append(alpha)
        logps.append(logp)
    ids, alphas, logps = (torch.stack(x, dim=1).cpu() for x in (chosen, weights, logps))
    return [finish_caption(ids[b].tolist(), alphas[b], logps[b], vocabulary.end_id)
            for b in range(len(maps))]


def finish_caption(ids: list[int], weights: torch.Tensor, logps: torch.Tensor,
                   end_id: int) -> Caption:
    """Cut a greedy sequence after its first <end> -> Caption (length-normalised score)."""
    steps = ids.index(end_id) + 1 if end_id in ids else len(ids)
    words = ids[:steps - 1] if end_id in ids else ids
    return Caption(words, weights[:steps].float(), float(logps[:steps].mean()))


@torch.no_grad()
def beam_search(model: AttentionCaptioner, maps: torch.Tensor, vocabulary: Vocabulary,
                beam_size: int = 3, max_length: int = 20) -> Caption:
    """One image's maps (1,R,C) -> the caption of best mean log-probability per token among
    the ``beam_size`` best kept at each step (<end> counted as a token)."""
    model.eval()
    features, keys, state = model.encode(maps)
    words = torch.tensor([vocabulary.start_id], device=maps.device)
    totals = torch.zeros(1, device=maps.device)
    paths_, alphas = [[]], [[]]
    done: list[Caption] = []
    for step in range(max_length):
        n = len(words)
        logits, state, alpha = model.step(words, state, features.expand(n, -1, -1),
                                          keys.expand(n, -1, -1))
        candidates = (totals.unsqueeze(1) + torch.log_softmax(logits.float(), dim=1)).flatten()
        best, flat = candidates.topk(min(beam_size, len(candidates)))
        rows, next_words = flat // logits.shape[1], flat % logits.shape[1]
        keep = []
        for score, row, word in zip(best.tolist(), rows.tolist(), next_words.tolist(),
                                    strict=True):
            weights = torch.stack([*alphas[row], alpha[row]]).cpu()
            if word == vocabulary.end_id or step == max_length - 1:
                ids = paths_[row] if word == vocabulary.end_id else [*paths_[row], word]
                done.append(Caption(ids, weights.float(), score / (step + 1)))
            else:
                keep.append((score, row, word))
        if len(done) >= beam_size or not keep:
            break
        totals = torch.tensor([k[0] for k in keep], device=maps.device)
        rows = torch.tensor([k[1] for k in keep], device=maps.device)
        words = torch.tensor([k[2] for k in keep], device=maps.device)
        state = (state[0][rows], state[1][rows])
        paths_ = [[*paths_[r], w] for _, r, w in keep]
        alphas = [[*alphas[r], alpha[r]] for _, r, _ in keep]
    return max(done, key=lambda c: c.score)


def generate_captions(model: AttentionCaptioner, maps: torch.Tensor, vocabulary: Vocabulary,
                      beam_size: int = 1, max_length: int = 20, batch_size: int = 100
                      ) -> list[Caption]:
    """Feature maps (N,R,C), any dtype, on the CPU -> N captions (greedy when beam_size = 1)."""
    device = next(model.parameters()).device
    found = []
    for start in range(0, len(maps), batch_size):
        batch = maps[start:start + batch_size].float().to(device)
        if beam_size == 1:
            found += greedy_decode(model, batch, vocabulary, max_length)
        else:
            found += [beam_search(model, batch[i:i + 1], vocabulary, beam_size, max_length)
                      for i in range(len(batch))]
    return found


def build_captioner(config: CaptionerConfig, vocabulary: Vocabulary,
                    embeddings: torch.Tensor | None = None, seed: int = 0
                    ) -> AttentionCaptioner:
    """A captioner for this config and vocabulary (weights seeded by ``seed``; embeddings:
    (V,E) or None)."""
    torch.manual_seed(seed)
    return AttentionCaptioner(config, len(vocabulary), CHANNELS, embeddings)


def save_captioner(path: Path, model: AttentionCaptioner, vocabulary: Vocabulary, epoch: int,
                   metrics: dict, training=None) -> Path:
    """One file: weights, architecture config, vocabulary, epoch, metrics and, as metadata,
    the run settings it was trained with (``training``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, state, asdict(model.config), kind="captioner",
                           vocabulary=vocabulary.to_dict(), epoch=epoch, metrics=metrics,
                           training=asdict(training) if training is not None else {})


def load_captioner(path: Path | None = None
                   ) -> tuple[AttentionCaptioner, Vocabulary, dict]:
    """Rebuild (model in eval mode on the device, vocabulary, checkpoint) from the file alone."""
    checkpoint = load_checkpoint(path or paths.model_path(CAPTIONER_CHECKPOINT),
                                 kind="captioner")
    config = config_from_dict(CaptionerConfig, checkpoint["config"])
    vocabulary = Vocabulary.from_dict(checkpoint["vocabulary"])
    model = build_captioner(config, vocabulary)
    load_weights(model, checkpoint, path or paths.model_path(CAPTIONER_CHECKPOINT))
    return model.to(get_device()).eval(), vocabulary, checkpoint


def caption_image(image: Path, model: AttentionCaptioner, vocabulary: Vocabulary,
                  beam_size: int | None = None) -> tuple[str, Caption]:
    """Any image file -> (its caption, the Caption with its attention weights); an ImageError
    naming the file when it is missing, not an image or too large."""
    problem = image_error(Path(image)) if Path(image).is_file() else "not found"
    if problem:
        raise ImageError(f"{image}: {problem}. Fix: give a JPEG or PNG image file.")
    config = model.config
    size = EFFICIENTNET_LITE[config.encoder][2]
    maps, _ = compute_features([Path(image)], config.encoder, size, batch_size=1)
    beam = beam_size or config.beam_size
    found = generate_captions(model, maps, vocabulary, beam, config.max_caption_length)[0]
    return vocabulary.decode(found.ids), found


def caption_cli(argv: list[str] | None = None) -> int:
    """``python -m utils.models.captioner caption IMAGE... [--checkpoint PATH] [--beam N]``:
    print each image's caption."""
    parser = argparse.ArgumentParser(prog="python -m utils.models.captioner")
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser("caption", help="caption image files with a saved model")
    caption.add_argument("images", nargs="+", type=Path)
    caption.add_argument("--checkpoint", type=Path, default=None,
                         help=f"default: models/{CAPTIONER_CHECKPOINT} (written by notebook 06)")
    caption.add_argument("--beam", type=positive_int, default=None,
                         help="beam size (default: the checkpoint config's)")
    args = parser.parse_args(argv)

    def work() -> str:
        model, vocabulary, _ = load_captioner(args.checkpoint)
        return "\n".join(f"{image}: {caption_image(image, model, vocabulary, args.beam)[0]}"
                         for image in args.images)

    return run_command(work, (CheckpointError, FileNotFoundError, ImageError))


if __name__ == "__main__":
    sys.exit(caption_cli())
