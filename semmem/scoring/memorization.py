"""Memorization scores and perplexities of 64-token sequences under a causal LM (spec §1.2, §2.9).

The Pythia definition: greedily generate 32 tokens from the 32-token prompt, with the EOS id excluded from the greedy
choice at every step (upstream passes min_length=64), and compare position by position with the true continuation.

Fast path, exact by construction:
1. One teacher-forced forward pass over all 64 tokens. The EOS-excluded argmax at position 31+j is the greedy choice
   for continuation token j *given the true prefix*. Up to the first mismatch p the generated prefix equals the true
   one, so greedy generation makes exactly these choices: matched_prefix = p and is_memorized = (p == 32) come from
   this pass alone, and so does generated token p itself.
2. Only rows with p <= 30 need generation, and only for tokens p+1..31. Their KV cache for positions 0..31+p is the
   teacher-forced cache (the same tokens went in), so decoding resumes from it. Rows join the decoding batch at the
   step where they first need it, so a row with a late first mismatch costs only its remaining steps.
3. The perplexities come from the same forward pass (unmasked softmax, float32 log-sum-exp).

Graded memorization and membership scores (issue 22, beyond.md §3), when asked for:
- memorized_at_k (Carlini et al. 2022): the continuation fixed, the prompt the k tokens before it. Greedy decoding
  from that prompt reproduces the continuation iff the EOS-excluded argmax given the true prefix is the true token at
  every continuation position, so teacher forcing over tokens [32-k, 63) decides it exactly; the output layer runs on
  the continuation positions only (`logits_to_keep`), and only the rows whose first 4 continuation tokens match go
  past them. k = 32 is is_memorized, reused.
- loss, min_k_prob, min_k_plus_plus score the 32 continuation tokens given the true 32-token prompt, from the main
  pass: the tokens the memorization label is about. The first prompt tokens, predicted from almost no context, have
  a high loss whatever the model saw, and would dominate the k% lowest. zlib_ratio is made in Spark
  (`score_sequences`): the sequence's text is not among a UDF's tokens.

Everything here is plain torch on tensors; `make_score_predict_fn` wraps it for `predict_batch_udf` and
`score_sequences` applies it to a Spark DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the driver of a Spark job never needs it for the DataFrame plan
    import torch
    from pyspark.sql import Column, DataFrame

SEQ_LEN = 64
PROMPT_LEN = 32
CONT_LEN = SEQ_LEN - PROMPT_LEN
OUTPUT_FIELDS = ("memorization_score", "is_memorized", "matched_prefix", "prompt_perplexity",
                 "generation_perplexity", "sequence_perplexity", "continuation_nll_bits")
MEMBERSHIP_FIELDS = ("loss", "min_k_prob", "min_k_plus_plus")  # with membership=True; float64


def output_fields(*, membership: bool = False, context_lengths: Sequence[int] = ()) -> tuple[str, ...]:
    """The keys score_tokens returns for these options, in its order."""
    return (*OUTPUT_FIELDS, *(MEMBERSHIP_FIELDS if membership else ()), *(f"memorized_at_{k}" for k in context_lengths))


@dataclass
class ForwardResult:
    """What one teacher-forced pass over [B, 64] tokens yields."""

    pred: torch.Tensor  # [B, C] EOS-excluded argmax for continuation positions (given the true prefix)
    nll: torch.Tensor  # [B, L-1] float32: -log P(t_{k+1} | t_<=k), k = 0..L-2, unmasked softmax
    cache: Any  # the KV cache of all 64 positions (a transformers Cache), or None when not requested
    # [B, C] float32 at the continuation positions, with membership=True (else None): the mean and standard deviation
    # of log p(z | prefix) over the vocabulary z under the model's own next-token distribution (Min-K%++)
    vocab_mean: torch.Tensor | None = None
    vocab_std: torch.Tensor | None = None


def continuation_length(length: int) -> int:
    """Tokens of a window's continuation: 32 for the 64-token sequences; a shorter text (`length` >= 2 real tokens,
    never padded) keeps min(32, length - 1) as its continuation and the tokens before it as its prompt."""
    return min(CONT_LEN, length - 1)


def eos_ids_of(model: Any) -> list[int]:
    """The EOS id(s) greedy choice must exclude: generation_config first, then config (as generate() does)."""
    ids: Any = None
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        ids = gen_cfg.eos_token_id
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _masked_argmax(logits: torch.Tensor, exclude_ids: Sequence[int], *, inplace: bool = False) -> torch.Tensor:
    """argmax over the last dim with `exclude_ids` set to -inf (ties: first index, as torch.argmax in generate()).

    inplace: the caller no longer needs `logits`, so mask them without a copy."""
    if exclude_ids:
        logits = logits if inplace else logits.clone()
        logits[..., list(exclude_ids)] = float("-inf")
    return logits.argmax(dim=-1)


def memorized_at_context(model: Any, tokens: torch.Tensor, k: int, *, exclude_ids: Sequence[int],
                         screen: int = 4) -> torch.Tensor:
    """[B] bool: does greedy decoding from the k tokens before the continuation reproduce it (EOS excluded)?

    Exact by teacher forcing over tokens [P-k, L-1): the input starts at position 0, as generate() from the k-token
    prompt would, and the output layer runs on the positions that predict continuation tokens only. Every row first
    checks its first `screen` continuation tokens (k + screen - 1 input tokens); only the rows that match all of them
    go on to the pass over the whole continuation. Most rows fail within a few tokens, so a row costs about k + screen
    positions instead of k + C (the tests compare every row with generate())."""
    import torch

    cont = continuation_length(tokens.shape[1])
    prompt = tokens.shape[1] - cont
    if not 1 <= k <= prompt:
        raise ValueError(f"context length {k} outside 1..{prompt}")

    def matches(rows: torch.Tensor, n: int) -> torch.Tensor:  # the first n continuation tokens of rows, all greedy?
        x = tokens[rows]
        logits = model(input_ids=x[:, prompt - k:prompt + n - 1], use_cache=False, logits_to_keep=n).logits
        # argmax in the model's dtype: widening to float32 is exact, so the choice (ties included) is the same
        return (_masked_argmax(logits, exclude_ids, inplace=True) == x[:, prompt:prompt + n]).all(dim=1)

    with torch.inference_mode():
        out = matches(torch.arange(tokens.shape[0], device=tokens.device), min(screen, cont))
        rows = torch.nonzero(out).flatten()
        if screen < cont and rows.numel():
            out[rows] = matches(rows, cont)
    return out


def teacher_forced(model: Any, tokens: torch.Tensor, *, exclude_ids: Sequence[int], keep_cache: bool,
                   nll_chunk: int = 16, membership: bool = False) -> ForwardResult:
    """One forward pass over tokens [B, L] (long, on the model's device; L = 64 for the corpus sequences).

    membership: also the vocabulary mean and standard deviation of the log-probabilities at the continuation
    positions (float32, two passes over each chunk: no cancellation in E[x^2] - E[x]^2)."""
    import torch

    length = tokens.shape[1]
    prompt = length - continuation_length(length)
    with torch.inference_mode():
        out = model(input_ids=tokens, use_cache=keep_cache)
        logits = out.logits  # [B, L, V] in the model's dtype
        b = tokens.shape[0]
        nll = torch.empty(b, length - 1, dtype=torch.float32, device=tokens.device)
        pred = torch.empty(b, length - prompt, dtype=torch.long, device=tokens.device)
        mean = torch.empty(b, length - prompt, dtype=torch.float32, device=tokens.device) if membership else None
        std = torch.empty_like(mean) if membership else None
        for s in range(0, b, nll_chunk):  # bounded float32 copies of the logits: chunk rows
            lg = logits[s:s + nll_chunk, :-1].float()  # [c, L-1, V]; position k predicts token k+1
            lse = torch.logsumexp(lg, dim=-1)  # [c, L-1]
            tgt = lg.gather(-1, tokens[s:s + nll_chunk, 1:, None]).squeeze(-1)
            nll[s:s + nll_chunk] = lse - tgt
            if membership:
                logp = lg[:, prompt - 1:] - lse[:, prompt - 1:, None]  # [c, C, V]
                p = logp.exp()
                mu = (p * logp).sum(dim=-1)
                mean[s:s + nll_chunk] = mu
                std[s:s + nll_chunk] = (p * logp.sub_(mu[..., None]).square_()).sum(dim=-1).sqrt()
            # positions P-1..L-2; lg (a view of the logits when they are float32) is not needed after this
            pred[s:s + nll_chunk] = _masked_argmax(lg[:, prompt - 1:], exclude_ids, inplace=True)
        return ForwardResult(pred, nll, out.past_key_values if keep_cache else None, mean, std)


def lowest_mean(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """[B] mean of the max(1, floor(fraction * n)) lowest of each row of values [B, n] (Min-K%: k = fraction)."""
    n = max(1, int(fraction * values.shape[1]))
    return values.topk(n, dim=1, largest=False).values.mean(dim=1)


def membership_scores(fwd: ForwardResult, prompt: int, min_k_fraction: float) -> dict[str, torch.Tensor]:
    """MEMBERSHIP_FIELDS [B] float64 over the continuation tokens (beyond.md §3): loss, the mean NLL (nats);
    min_k_prob, the mean of the k% lowest log-probabilities; min_k_plus_plus, the same of (log p - mu) / sigma."""
    logp = -fwd.nll[:, prompt - 1:].double()  # [B, C]
    z = (logp - fwd.vocab_mean.double()) / fwd.vocab_std.double()
    return {"loss": -logp.mean(dim=1), "min_k_prob": lowest_mean(logp, min_k_fraction),
            "min_k_plus_plus": lowest_mean(z, min_k_fraction)}


def matched_prefix_of(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Length of the leading run of pred == truth ([B, C] each) -> [B] long."""
    return (pred == truth).long().cumprod(dim=1).sum(dim=1)


def perplexities(nll: torch.Tensor, tokens: torch.Tensor, *, upstream: bool = False, eod_id: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt, generation, sequence) perplexities [B] float64 from nll [B, L-1] of windows of L tokens.

    Default, the correct per-part means: prompt over the P-1 prompt-internal predictions (k = 0..P-2; NaN for a
    one-token prompt), generation over the C continuation predictions (k = P-1..L-2), sequence over all L-1; for the
    64-token sequences P = C = 32.
    upstream=True, spec §2.9: N = L-1 - #(tokens == eod_id) probabilities kept from the start (tokens dropped from
    the end), m = N // 2, every part divided by N, so sequence = prompt * generation. N <= 0 gives NaN.
    """
    import torch

    nll = nll.double()
    length = tokens.shape[1]
    if not upstream:
        prompt = length - continuation_length(length)
        p = nll[:, :prompt - 1].mean(dim=1)
        g = nll[:, prompt - 1:].mean(dim=1)
        s = nll.mean(dim=1)
        return p.exp(), g.exp(), s.exp()
    n = (length - 1) - (tokens == eod_id).sum(dim=1)  # [B]
    m = torch.div(n, 2, rounding_mode="floor")
    k = torch.arange(length - 1, device=nll.device)[None, :]
    keep = k < n[:, None]
    first = keep & (k < m[:, None])
    denom = n.double().clamp(min=1)
    p = (nll * first).sum(dim=1) / denom
    s = (nll * keep).sum(dim=1) / denom
    g = s - p
    bad = n <= 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=nll.device)
    return (torch.where(bad, nan, p.exp()), torch.where(bad, nan, g.exp()), torch.where(bad, nan, s.exp()))


def _cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def continue_generation(model: Any, tokens: torch.Tensor, fwd: ForwardResult, prefix: torch.Tensor, *,
                        exclude_ids: Sequence[int]) -> torch.Tensor:
    """The C greedily generated tokens [B, C] (C = 32 for the 64-token sequences), decoding only what the
    teacher-forced pass cannot give.

    Known without decoding: tokens 0..p-1 (= the truth) and token p (= fwd.pred[p]). Rows with p >= C-1 are complete.
    A row with p <= C-2 joins the decoding batch at step t = p + 1 with the teacher-forced cache cut to P + p
    positions (P: the prompt's length); at step t every active row feeds its token t-1 at position P - 1 + t.
    """
    import torch
    from transformers import DynamicCache

    cont = fwd.pred.shape[1]
    prompt = tokens.shape[1] - cont
    truth = tokens[:, prompt:]
    pos = torch.arange(cont, device=tokens.device)[None, :]
    gen = torch.where(pos < prefix[:, None], truth, fwd.pred)  # exact up to p; placeholders after p
    need = prefix <= cont - 2
    if not bool(need.any()):
        return gen
    layers = _cache_layers(fwd.cache)
    prefix_cpu = prefix.cpu()
    active = torch.empty(0, dtype=torch.long, device=tokens.device)
    cache: Any = None
    start = int(prefix_cpu[need.cpu()].min()) + 1
    with torch.inference_mode():
        for t in range(start, cont):
            joining = torch.nonzero((prefix_cpu == t - 1) & need.cpu()).flatten().to(tokens.device)
            if joining.numel():
                new = [(k[joining, :, :prompt - 1 + t], v[joining, :, :prompt - 1 + t]) for k, v in layers]
                if cache is None:
                    merged = new
                else:
                    merged = [(torch.cat([ka, kn]), torch.cat([va, vn]))
                              for (ka, va), (kn, vn) in zip(_cache_layers(cache), new)]
                cache = DynamicCache(merged)
                active = torch.cat([active, joining])
            out = model(input_ids=gen[active, t - 1:t], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            gen[active, t] = _masked_argmax(out.logits[:, -1].float(), exclude_ids, inplace=True)
    return gen


def score_tokens(model: Any, tokens: torch.Tensor, *, mode: str = "full", upstream_perplexity: bool = False,
                 eod_id: int = 0, exclude_ids: Sequence[int] | None = None, context_lengths: Sequence[int] = (),
                 membership: bool = False, min_k_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """Score one batch tokens [B, L] (long, on the model's device); returns tensors [B] keyed by OUTPUT_FIELDS, then
    MEMBERSHIP_FIELDS when `membership`, then memorized_at_<k> (bool) for each of `context_lengths`.

    L = 64 for the corpus sequences (a 32-token prompt, a 32-token continuation); a user's text shorter than 64
    tokens is scored at its own length L >= 2, its continuation the last `continuation_length(L)` tokens, with no
    padding anywhere in the model's input. mode "flag": no generation, memorization_score is NaN. mode "full": exact
    memorization_score.
    """
    import torch

    if tokens.ndim != 2 or not 2 <= tokens.shape[1] <= SEQ_LEN:
        raise ValueError(f"expected token batches of shape [B, L], 2 <= L <= {SEQ_LEN}, got {tuple(tokens.shape)}")
    if mode not in ("full", "flag"):
        raise ValueError(f"mode must be 'full' or 'flag', got {mode!r}")
    exclude = eos_ids_of(model) if exclude_ids is None else list(exclude_ids)
    fwd = teacher_forced(model, tokens, exclude_ids=exclude, keep_cache=mode == "full", membership=membership)
    cont = fwd.pred.shape[1]
    prompt = tokens.shape[1] - cont
    truth = tokens[:, prompt:]
    prefix = matched_prefix_of(fwd.pred, truth)
    ppl_p, ppl_g, ppl_s = perplexities(fwd.nll, tokens, upstream=upstream_perplexity, eod_id=eod_id)
    if mode == "full":
        gen = continue_generation(model, tokens, fwd, prefix, exclude_ids=exclude)
        score = (gen == truth).double().mean(dim=1)
    else:
        score = torch.full((tokens.shape[0],), float("nan"), dtype=torch.float64, device=tokens.device)
    fwd.cache = None
    out = {"memorization_score": score, "is_memorized": prefix == cont, "matched_prefix": prefix,
           "prompt_perplexity": ppl_p, "generation_perplexity": ppl_g, "sequence_perplexity": ppl_s,
           "continuation_nll_bits": fwd.nll[:, prompt - 1:].double().sum(dim=1) / math.log(2)}
    if membership:
        out.update(membership_scores(fwd, prompt, min_k_fraction))
    for k in context_lengths:
        out[f"memorized_at_{k}"] = out["is_memorized"] if k == prompt else \
            memorized_at_context(model, tokens, k, exclude_ids=exclude)
    return out


def score_numpy(model: Any, tokens: np.ndarray, *, batch_size: int, device: Any, **kwargs: Any
                ) -> dict[str, np.ndarray]:
    """score_tokens over a [N, 64] integer array in micro-batches; numpy outputs for predict_batch_udf (the
    memorized_at_<k> flags as bool, like is_memorized)."""
    import torch

    parts: dict[str, list[np.ndarray]] = {k: [] for k in output_fields(
        membership=kwargs.get("membership", False), context_lengths=kwargs.get("context_lengths", ()))}
    for s in range(0, len(tokens), batch_size):
        batch = torch.as_tensor(np.asarray(tokens[s:s + batch_size], dtype=np.int64), device=device)
        for k, v in score_tokens(model, batch, **kwargs).items():
            parts[k].append(v.cpu().numpy())
    out = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in parts.items()}
    for k in out:
        out[k] = out[k].astype(bool if k == "is_memorized" or k.startswith("memorized_at_") else
                               np.int32 if k == "matched_prefix" else np.float64)
    return out


def auto_batch_size(model: Any, device: Any, *, cpu_default: int = 64, max_batch: int = 1024) -> int:
    """Rows per forward pass: a fixed default on CPU; on GPU the most that fits in 60% of free memory.

    Per row: the logits [64, V] in the model dtype, the KV cache of 64 positions, and the activations of one layer
    (about 24 x hidden values per position: attention and the 4x MLP), times 2 for safety. The float32 log-softmax
    copies (with Min-K%++'s three over the continuation's positions) are bounded by their 16-row chunk and taken off
    the free memory first. The memorized_at passes come after the main pass has freed its logits and use fewer.
    """
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return cpu_default
    free, _total = torch.cuda.mem_get_info(device)
    cfg = model.config
    elt = next(model.parameters()).element_size()
    hidden = int(getattr(cfg, "hidden_size", 2048))
    layers = int(getattr(cfg, "num_hidden_layers", 16))
    vocab = int(getattr(cfg, "vocab_size", 50304))
    chunk_bytes = 3 * 16 * SEQ_LEN * vocab * 4
    per_row = 2 * SEQ_LEN * elt * (vocab + 2 * layers * hidden + 24 * hidden)
    n = (int(free * 0.6) - chunk_bytes) // per_row
    return int(max(1, min(max_batch, 2 ** int(math.log2(max(n, 1))))))


def make_score_predict_fn(model_spec: Any, *, mode: str, upstream_perplexity: bool, eod_id: int,
                          batch_size: int | None, dtype: str = "auto", device: str = "auto",
                          tokenizer_vocab: int | None = None, context_lengths: Sequence[int] = (),
                          min_k_fraction: float = 0.2,
                          ) -> Callable[[], Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]]:
    """A `make_predict_fn` for predict_batch_udf; runs on executors.

    The returned factory loads the model once per Python worker (predict_batch_udf caches it), on the GPU Spark
    assigned to the task when there is one (TaskContext resources "gpu"), else on CPU. It checks, in the task, that
    the tokenizer's vocabulary (`tokenizer_vocab`, when given) fits the model's embedding; each batch
    (sequence_id [n], token count [n], tokens [n, 64]) is checked by `check_batch` before the forward pass. Outputs:
    output_fields(membership=True, context_lengths) without is_memorized, the memorized_at_<k> flags as 0/1 int32
    (predict_batch_udf has no BooleanType outputs).
    """

    def make() -> Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]:
        model, dev, vocab, micro, name = load_for_scoring(model_spec, dtype=dtype, device=device,
                                                          tokenizer_vocab=tokenizer_vocab, batch_size=batch_size)

        def predict(ids: np.ndarray, lengths: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
            check_batch(ids, lengths, tokens, vocab, name)
            out = score_numpy(model, tokens, batch_size=micro, device=dev, mode=mode,
                              upstream_perplexity=upstream_perplexity, eod_id=eod_id,
                              context_lengths=context_lengths, membership=True, min_k_fraction=min_k_fraction)
            del out["is_memorized"]  # matched_prefix == 32 in Spark
            return {k: v.astype(np.int32) if k.startswith("memorized_at_") else v for k, v in out.items()}

        predict.semmem_scoring = True  # type: ignore[attr-defined]

        return predict

    return make


def load_for_scoring(model_spec: Any, *, dtype: str, device: str, tokenizer_vocab: int | None,
                     batch_size: int | None) -> tuple[Any, Any, int, int, str]:
    """In a task: (model, device, embedding rows, rows per forward pass, "model@revision"), after the checks that
    fail clearly (folder missing on this node, tokenizer larger than the model's embedding)."""
    from semmem.scoring.models import check_local_files, check_vocabulary, embedding_rows, load_model, pick_device

    check_local_files(model_spec)  # a folder missing on this node fails before torch is imported
    _evict_previous_models()
    dev = pick_device(device)
    model = load_model(model_spec, device=dev, dtype=dtype)
    vocab = embedding_rows(model)
    name = f"{model_spec.model}@{model_spec.revision}"
    if tokenizer_vocab is not None:
        check_vocabulary(name, tokenizer_vocab, vocab)
    return model, dev, vocab, batch_size or auto_batch_size(model, dev), name


def check_batch(ids: np.ndarray, lengths: np.ndarray, tokens: np.ndarray, vocab: int, model: str) -> None:
    """InputError naming the first sequence that is not exactly SEQ_LEN tokens (`lengths`: -1 for NULL tokens) or
    holds a token id outside [0, vocab) of `model`, before the forward pass would fail on it (or index the wrong
    memory on a GPU)."""
    from semmem.errors import InputError

    ids, lengths = np.asarray(ids), np.asarray(lengths)
    bad = np.flatnonzero(lengths != SEQ_LEN)
    if bad.size:
        i = int(bad[0])
        has = "NULL tokens" if int(lengths[i]) < 0 else f"{int(lengths[i])} tokens"
        raise InputError(f"sequence {int(ids[i])} has {has}; scoring needs exactly {SEQ_LEN} (a {PROMPT_LEN}-token "
                         f"prompt and its {CONT_LEN}-token continuation) ({bad.size} such sequence(s) in this batch). "
                         "Re-ingest (stage ingest) so every sequence has 64 tokens, or remove the short ones")
    tokens = np.asarray(tokens)
    outside = (tokens < 0) | (tokens >= vocab)
    if outside.any():
        row, col = (int(x) for x in np.argwhere(outside)[0])
        raise InputError(f"sequence {int(ids[row])} has token id {int(tokens[row, col])} at position {col}, outside "
                         f"the vocabulary of model {model} ({vocab} ids, 0..{vocab - 1}); "
                         f"{int(outside.any(axis=1).sum())} sequence(s) of this batch do. The sequences were "
                         "tokenized with a tokenizer the model was not trained with: score with the model that "
                         "matches the warehouse's tokenizer, or re-ingest with the model's tokenizer (tokenizer.name)")


def _evict_previous_models() -> None:
    """Drop earlier semmem models from pyspark's per-worker ModelCache (it keeps 3) before loading the next one, so
    scoring 12b after 6.9b and 2.8b does not hold all three on one GPU. Uses ModelCache's private dict."""
    import gc

    try:
        from pyspark.ml.model_cache import ModelCache
    except ImportError:  # pragma: no cover - outside pyspark
        return
    with ModelCache._lock:  # noqa: SLF001
        for key in [k for k, fn in ModelCache._models.items() if getattr(fn, "semmem_scoring", False)]:  # noqa: SLF001
            del ModelCache._models[key]  # noqa: SLF001
    _WORKER_MODEL.clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fixed_length_tokens(column: str = "tokens") -> tuple[Column, Column]:
    """(the row's token count, -1 for NULL; its tokens cut or padded with -1 to exactly SEQ_LEN). Every row reaches
    the model this way, so a short or NULL sequence is reported by check_batch with its id instead of failing
    numpy's reshape inside pyspark."""
    from pyspark.sql import functions as F

    tokens = F.col(column)
    length = F.coalesce(F.size(tokens), F.lit(-1))  # size(NULL) is NULL under ANSI mode, -1 without
    padded = F.slice(F.concat(F.coalesce(tokens, F.array().cast("array<int>")), F.array_repeat(F.lit(-1), SEQ_LEN)),
                     1, SEQ_LEN)
    return length, padded


def zlib_length(text: Column) -> Column:
    """Bytes of zlib.compress of the UTF-8 text at the default level, as MIMIR's zlib attack; NULL for NULL."""
    import zlib

    from pyspark.sql import functions as F

    return F.udf(lambda t: None if t is None else len(zlib.compress(t.encode("utf-8"))), "int", useArrow=True)(text)


def score_sequences(df: DataFrame, model_spec: Any, *, mode: str = "full", upstream_perplexity: bool = False,
                    eod_id: int = 0, batch_size: int | None = None, dtype: str = "auto", device: str = "auto",
                    udf_batch_size: int = 1024, tokenizer_vocab: int | None = None,
                    context_lengths: Sequence[int] = (CONT_LEN,), min_k_fraction: float = 0.2) -> DataFrame:
    """sequences(sequence_id, tokens[64], text, ...) -> memorization rows for one model@revision (lazy; runs on
    executors).

    memorized_at maps each of `context_lengths` to the exact memorized-at-k flag; loss, min_k_prob and
    min_k_plus_plus score the continuation (MEMBERSHIP_FIELDS); zlib_ratio = loss / zlib_length(text), the text of all
    64 tokens: the compressor, like the model, sees the prompt, so a continuation that repeats it compresses well.

    udf_batch_size rows go to one predict call; inside, they run in micro-batches of `batch_size` (None: found from
    free GPU memory, 64 on CPU). In flag mode memorization_score is NULL. In the tasks, before any forward pass: a
    ModelError when the model cannot be loaded there or `tokenizer_vocab` (the size of the tokenizer the sequences
    were made with) exceeds the model's embedding rows; an InputError naming the sequence when one is not 64 tokens
    or holds an id outside the model's vocabulary.
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    fields = [f for f in output_fields(membership=True, context_lengths=context_lengths) if f != "is_memorized"]
    rtype = StructType([StructField(f, IntegerType() if f == "matched_prefix" or f.startswith("memorized_at_")
                                    else DoubleType()) for f in fields])
    udf = predict_batch_udf(
        make_score_predict_fn(model_spec, mode=mode, upstream_perplexity=upstream_perplexity, eod_id=eod_id,
                              batch_size=batch_size, dtype=dtype, device=device, tokenizer_vocab=tokenizer_vocab,
                              context_lengths=context_lengths, min_k_fraction=min_k_fraction),
        return_type=rtype, batch_size=max(udf_batch_size, batch_size or 1),
        input_tensor_shapes=[None, None, [SEQ_LEN]])
    scored = df.select("sequence_id", "text", udf(F.col("sequence_id"), *fixed_length_tokens()).alias("s"))
    score = F.col("s.memorization_score") if mode == "full" else F.lit(None).cast("double")
    memorized_at = F.create_map(*(c for k in context_lengths for c in (F.lit(k), F.col(f"s.memorized_at_{k}") == 1)))
    return scored.select(
        F.lit(model_spec.model).alias("model"), F.lit(model_spec.revision).alias("revision"), "sequence_id",
        score.alias("memorization_score"), (F.col("s.matched_prefix") == CONT_LEN).alias("is_memorized"),
        *(F.col(f"s.{f}").alias(f) for f in ("matched_prefix", "prompt_perplexity", "generation_perplexity",
                                             "sequence_perplexity", "continuation_nll_bits", *MEMBERSHIP_FIELDS)),
        memorized_at.alias("memorized_at"), (F.col("s.loss") / zlib_length(F.col("text"))).alias("zlib_ratio"))


WINDOW_SCORES = ("key BIGINT, continuation_length INT, memorization_score DOUBLE, matched_prefix INT, "
                 "prompt_perplexity DOUBLE, generation_perplexity DOUBLE, sequence_perplexity DOUBLE, "
                 "continuation_nll_bits DOUBLE")
_WORKER_MODEL: dict[tuple, Any] = {}  # the model a Python worker holds between tasks (one at a time)


def worker_model(key: tuple, load: Callable[[], Any]) -> Any:
    """What `load` returns, kept for this Python worker's next task with the same `key`; a new key drops the
    previous model (and pyspark's cached scoring models) first, so two never share a GPU."""
    if key not in _WORKER_MODEL:
        _evict_previous_models()
        _WORKER_MODEL[key] = load()
    return _WORKER_MODEL[key]


def score_ragged(model: Any, windows: list[np.ndarray], *, batch_size: int, device: Any, mode: str = "full"
                 ) -> dict[str, np.ndarray]:
    """score_numpy over windows of different lengths (2..64 real tokens each, never padded): the windows of one
    length are scored together at that length; outputs in input order."""
    n = len(windows)
    out: dict[str, np.ndarray] = {k: np.empty(n, np.float64) for k in OUTPUT_FIELDS}
    lengths = np.array([len(w) for w in windows], dtype=np.int64)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        part = score_numpy(model, np.stack([windows[i] for i in rows]), batch_size=batch_size, device=device,
                           mode=mode)
        for k, v in part.items():
            out[k][rows] = v
    out["matched_prefix"] = out["matched_prefix"].astype(np.int32)
    out["is_memorized"] = out["is_memorized"].astype(bool)
    return out


def score_windows(df: DataFrame, model_spec: Any, *, mode: str = "full", batch_size: int | None = None,
                  dtype: str = "auto", device: str = "auto", tokenizer_vocab: int | None = None) -> DataFrame:
    """(key, tokens of 2..64 ids) -> WINDOW_SCORES per row for one model@revision (lazy; runs on executors).

    Each window is scored at its own length, its continuation its last `continuation_length` tokens: a text shorter
    than 64 tokens reaches the model without padding. The model is loaded once per Python worker; a window outside
    2..64 tokens or with an id outside the model's vocabulary is an InputError naming its key."""
    import pyarrow as pa

    from semmem.errors import InputError

    def body(batches):  # noqa: ANN001, ANN202 - mapInArrow iterators
        model, dev, vocab, micro, name = worker_model(
            ("windows", model_spec, dtype, device, tokenizer_vocab, batch_size),
            lambda: load_for_scoring(model_spec, dtype=dtype, device=device, tokenizer_vocab=tokenizer_vocab,
                                     batch_size=batch_size))
        for batch in batches:
            keys = batch.column("key").to_numpy(zero_copy_only=False)
            windows = [np.asarray(t, dtype=np.int64) for t in batch.column("tokens").to_pylist()]
            for k, w in zip(keys, windows):
                if not 2 <= len(w) <= SEQ_LEN or (len(w) and (w.min() < 0 or w.max() >= vocab)):
                    raise InputError(f"window {int(k)}: {len(w)} tokens, ids {w.min() if len(w) else '-'}.."
                                     f"{w.max() if len(w) else '-'}; model {name} scores 2..{SEQ_LEN} ids in "
                                     f"0..{vocab - 1}")
            out = score_ragged(model, windows, batch_size=micro, device=dev, mode=mode) if windows else \
                {k: np.empty(0) for k in OUTPUT_FIELDS}
            yield pa.RecordBatch.from_pydict({
                "key": pa.array(keys, pa.int64()),
                "continuation_length": pa.array([continuation_length(len(w)) for w in windows], pa.int32()),
                "memorization_score": pa.array(out["memorization_score"], pa.float64(), from_pandas=True),  # flag: NULL
                "matched_prefix": pa.array(out["matched_prefix"], pa.int32()),
                **{k: pa.array(out[k], pa.float64()) for k in ("prompt_perplexity", "generation_perplexity",
                                                                "sequence_perplexity", "continuation_nll_bits")}})

    return df.select("key", "tokens").mapInArrow(body, WINDOW_SCORES)
