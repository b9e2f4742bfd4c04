"""Documents -> token sequences with a loss mask, by kind: the BOS/EOS and chat-template policy in one place.

    text   BOS + text + EOS; every token is a target.
    chat   the conversation rendered by a chat template; only assistant turns are targets, their end-of-turn
           token included (role headers, system and user turns, and template glue are context). Templates:
           `tokenizer` (the HF tokenizer's own `chat_template`), or the built-in `llama3` and `chatml`.
    pairs  two sequences, BOS + prompt + chosen + EOS and BOS + prompt + rejected + EOS; the completion and its
           EOS are targets. They are stored next to each other (chosen first) for the preference objectives.
    completion  BOS + prompt + completion + EOS; the completion and EOS are targets (TRL's completion-only loss).
           Prompt and completion are tokenized apart, as `generate` sees them: BOS + prompt, then new tokens.

A rendered conversation is a list of (text, is_target) segments; each segment is tokenized on its own, so the
mask is exact whatever the tokenizer. For the `tokenizer` template the segments come from rendering growing
prefixes of the conversation (the template must render a prefix as a prefix, which chat templates do).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from jaxfin.config.choices import CHAT_TEMPLATES
from jaxfin.data import DataError

TEMPLATES = CHAT_TEMPLATES
RENDER_VERSION = 1  # bump when rendering changes: it is part of every token-cache key
Segments = list[tuple[str, bool]]
Seq = tuple[list[int], list[int] | None]


def llama3_segments(messages: list[dict]) -> Segments:
    segs: Segments = [("<|begin_of_text|>", False)]
    for m in messages:
        segs.append((f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n", False))
        segs.append((m["content"].strip() + "<|eot_id|>", m["role"] == "assistant"))
    return segs


def chatml_segments(messages: list[dict]) -> Segments:
    segs: Segments = []
    for m in messages:
        segs.append((f"<|im_start|>{m['role']}\n", False))
        segs.append((m["content"] + "<|im_end|>", m["role"] == "assistant"))
        segs.append(("\n", False))
    return segs


def tokenizer_segments(messages: list[dict], hf_tokenizer) -> Segments:
    """Segments from the HF tokenizer's own template: the text added by each assistant turn is a target."""
    if hf_tokenizer is None or not getattr(hf_tokenizer, "chat_template", None):
        raise DataError("chat_template 'tokenizer' needs a Hugging Face tokenizer with a chat_template; "
                        "choose a built-in one: llama3 or chatml")  # fmt: skip
    segs: Segments = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] == "assistant":  # the prompt for this turn, then the turn itself
            prompt = hf_tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            segs.append((_suffix(done, prompt), False))
            done = prompt
        full = hf_tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        added = _suffix(done, full)
        segs += _assistant_split(added, m["content"], hf_tokenizer) if m["role"] == "assistant" else [(added, False)]
        done = full
    return segs


def _assistant_split(added: str, content: str, hf_tokenizer) -> Segments:
    """The text a template adds for an assistant turn: the content and the end-of-turn special token that
    follows it are targets; template glue around them (a trailing newline, say) is not."""
    start = added.find(content)
    if start < 0:  # the template rewrote the content (e.g. stripped it): train on all it added
        return [(added, True)]
    end = start + len(content)
    ends = [(added.find(t, end), t) for t in hf_tokenizer.all_special_tokens if added.find(t, end) >= 0]
    if ends:
        at, tok = min(ends)
        end = at + len(tok)
    return [(added[:start], False), (added[start:end], True), (added[end:], False)]


def _suffix(prefix: str, text: str) -> str:
    if not text.startswith(prefix):
        raise DataError("the tokenizer's chat template does not render a conversation's prefix as a prefix, so "
                        "assistant turns cannot be masked; use chat_template: llama3 or chatml")  # fmt: skip
    return text[len(prefix) :]


def _encode_segments(segs: Segments, tok) -> tuple[list[int], list[int]]:
    texts = [t for t, _ in segs if t]
    flags = [f for t, f in segs if t]
    tokens, mask = [], []
    for ids, target in zip(tok.encode_batch(texts), flags):
        tokens += ids
        mask += [int(target)] * len(ids)
    return tokens, mask


def check_template_tokens(template: str, tok) -> None:
    """A built-in template's special tokens must be single tokens of this tokenizer, or the chat is garbled."""
    specials = {"llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                "chatml": ["<|im_start|>", "<|im_end|>"]}.get(template, [])  # fmt: skip
    for s in specials:
        if len(tok.encode(s)) != 1:
            raise DataError(f"chat_template '{template}' needs '{s}' to be one token of the tokenizer at {tok.path}")


def sequences(docs: Iterable, kind: str, tok, template: str = "tokenizer", batch_size: int = 512) -> Iterator[Seq]:
    """(tokens, loss_mask) for each document in order (two per document for pairs); the mask is None for
    text, where every token is a target. Text is tokenized in batches on the tokenizer's threads."""
    if kind == "text":
        bos, eos = _specials(tok)
        for batch in _batches(docs, batch_size):
            for ids in tok.encode_batch([d.data["text"] for d in batch]):
                yield bos + ids + eos, None
        return
    if kind == "chat" and template != "tokenizer":
        check_template_tokens(template, tok)
    for d in docs:
        yield from render(kind, d.data, tok, template)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _specials(tok) -> tuple[list[int], list[int]]:
    return ([tok.bos_id] if tok.bos_id is not None else []), ([tok.eos_id] if tok.eos_id is not None else [])


def render(kind: str, data: dict, tok, template: str = "tokenizer") -> list[Seq]:
    """(tokens, loss_mask) sequences for one chat, pairs or completion document."""
    bos, eos = _specials(tok)
    if kind == "chat":
        messages = data["messages"]
        segs = {"llama3": llama3_segments, "chatml": chatml_segments}.get(template)
        segs = segs(messages) if segs else tokenizer_segments(messages, tok.hf)
        return [_encode_segments(segs, tok)]
    if kind in ("pairs", "completion"):
        prompt = bos + tok.encode(data["prompt"])
        out = []
        for completion in (data["chosen"], data["rejected"]) if kind == "pairs" else (data["completion"],):
            ids = tok.encode(completion) + eos
            out.append((prompt + ids, [0] * len(prompt) + [1] * len(ids)))
        return out
    raise DataError(f"unknown document kind '{kind}'")
