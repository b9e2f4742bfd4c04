"""Document filters: finance keywords, Gopher-style quality heuristics, exact dedup and MinHash near dedup.

Everything here takes plain strings and returns a reason name (or None = keep), so it composes with any source or
report type:

    filt = DocumentFilter(cfg.data.filters)      # a FilterConfig
    for doc in docs:
        why = filt.reason(doc.text_for_filters())
        if why: report.drop(why, doc.loc)
    filt.counts                                  # Counter of drop reasons; filt.seen / filt.kept

`DocumentFilter.reason` applies, in this order, and returns the first that fails:

    min_chars        len(text) < min_chars, or only whitespace
    max_chars        len(text) > max_chars
    keywords         fewer than min_keyword_hits keyword matches (only when min_keyword_hits > 0)
    quality_*        the first failing Gopher heuristic (only when quality is on), see `quality_reasons`
    exact_duplicate  same text as an earlier kept document up to whitespace (only when exact_dedup is on)
    near_duplicate   estimated Jaccard similarity of shingles with an earlier kept document above the
                     threshold, by MinHash + LSH (only when near_dedup is on)

It is a streaming filter: the first occurrence of a document is kept and later copies are dropped. Only documents
that pass every earlier check enter the dedup state; that state holds hashes only, never the texts: a 128-bit
digest per kept document for exact dedup and one 64-bit key per LSH band for near dedup (measured: ~0.08 KB and
~0.75 KB of Python memory per kept document), so a few million documents fit in a few GB in one process.

CJK text. Chinese and Japanese have no spaces between words, so the word-based heuristics mean nothing there. A text
is "CJK-heavy" when more than half of its non-whitespace characters are CJK ideographs, kana or hangul; for such a
text the mean-word-length and top-2-gram checks are skipped, the symbol ratio counts every CJK character as one word,
and near dedup shingles by character 5-grams instead of word 5-grams.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import string
import zlib
from collections import Counter
from collections.abc import Iterable

import numpy as np

from jaxfin.config.schema import FilterConfig
from jaxfin.data.lexicon import resolve_keywords

# Named after the setting that drops them, so they never read as the bad-input reasons of jaxfin.data.sources
# ("empty", "too_long"), which count towards data.max_bad_fraction; these are policy, not bad input.
REASONS = (
    "min_chars",
    "max_chars",
    "keywords",
    "quality_symbol_ratio",
    "quality_mean_word_length",
    "quality_duplicate_lines",
    "quality_top_ngram",
    "exact_duplicate",
    "near_duplicate",
)

# Hiragana + katakana, CJK extension A, unified ideographs, hangul syllables, compatibility ideographs, and the
# supplementary-plane ideographs (extensions B-H).
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
# Characters that make a letter run continue, for English word boundaries. Not Python's \w: that includes CJK, and
# an English term right next to a Chinese character ("以GDP計算") must still match.
_LATIN_WORD = "0-9A-Za-z\u00c0-\u024f"
_PUNCT = string.punctuation + "“”‘’«»–—…·•"


def cjk_counts(text: str) -> tuple[int, int]:
    """(CJK characters, non-whitespace characters) of `text`."""
    if text.isascii():  # O(1) in CPython
        return 0, len(text) - sum(text.count(c) for c in " \t\n\r\f\v")
    return len(CJK_CHAR.findall(text)), len("".join(text.split()))


def is_cjk_heavy(text: str) -> bool:
    """More than half of the non-whitespace characters are CJK (ideographs, kana, hangul)."""
    if text.isascii():
        return False
    n_cjk, n = cjk_counts(text)
    return 2 * n_cjk > n


# ----------------------------------------------------------------------------------------------------------------
# Keywords


def _trie_pattern(strings: Iterable[str], atom) -> str:
    """One regex alternation for many literal strings, factored as a prefix trie.

    Python's `re` tries the branches of a flat alternation one by one at every position; the trie form makes each
    position cost one branch per character instead. Greedy optional groups make the longest term win.
    """
    root: dict = {}
    for s in strings:
        node = root
        for ch in s:
            node = node.setdefault(ch, {})
        node[""] = {}

    def walk(node: dict) -> str:
        branches = [atom(ch) + walk(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return walk(root)


def _english_atom(ch: str) -> str:
    if ch == " ":
        return r"\s+"  # a space in a phrase matches any run of whitespace (line breaks included)
    if ch == "-":
        return r"[-\u2010\u2011\s]?"  # "write-off" = "write off" = "writeoff"
    return re.escape(ch)


def _english_variants(term: str) -> list[str]:
    """A lowercased term and its regular plurals: +s, +es, and y -> ies after a consonant."""
    t = term.lower()
    out = [t]
    if t[-1].isalpha():
        out += [t + "s", t + "es"]
        if t[-1] == "y" and len(t) > 1 and t[-2] not in "aeiouy":
            out.append(t[:-1] + "ies")
    return out


class KeywordMatcher:
    """Counts occurrences of keywords (words or phrases) in a text.

    English (any term without CJK characters): case-insensitive, on word boundaries (a letter or digit may not
    precede or follow, so "rate" does not match "pirate" or "rated"), each term also matches its regular plural
    ("rate" matches "rates", "liability" matches "liabilities"), whitespace inside a phrase matches any whitespace,
    and a hyphen may also be a space or nothing. Chinese/Japanese (any term with a CJK character): plain substring
    match, since there are no word boundaries. Traditional and Simplified forms are different strings: list both
    (the built-in lexicon does).

    Matches do not overlap; where several terms match at one position, the longest one counts ("中央銀行" counts
    once, not also as "銀行"; "interest rate swap" once, not also as "interest rate"). All terms are compiled into
    two trie-shaped regexes (English, CJK), so the cost does not grow with a loop over the terms.
    """

    def __init__(self, keywords: Iterable[str]):
        terms = sorted({" ".join(k.split()) for k in keywords if k and k.strip()})
        if not terms:
            raise ValueError("KeywordMatcher needs at least one keyword")
        self.terms = terms
        cjk = [t for t in terms if CJK_CHAR.search(t)]
        english = [v for t in terms if not CJK_CHAR.search(t) for v in _english_variants(t)]
        self._en = self._cjk = None
        if english:
            body = _trie_pattern(english, _english_atom)
            # Terms are lowercased and so is the text: 3x faster than re.IGNORECASE.
            self._en = re.compile(f"(?<![{_LATIN_WORD}]){body}(?![{_LATIN_WORD}])")
        if cjk:
            self._cjk = re.compile(_trie_pattern(cjk, re.escape))

    def findall(self, text: str) -> list[str]:
        """The matched substrings (English ones lowercased), English matches first, then CJK ones."""
        out = self._en.findall(text.lower()) if self._en is not None else []
        if self._cjk is not None and not text.isascii():
            out += self._cjk.findall(text)
        return out

    def hits(self, text: str) -> int:
        """Total number of (non-overlapping) keyword occurrences in `text`."""
        return len(self.findall(text))


# ----------------------------------------------------------------------------------------------------------------
# Quality (Gopher, Rae et al. 2021, "Scaling Language Models", appendix A: MassiveText quality filter)


def quality_reasons(text: str, cfg: FilterConfig) -> str | None:
    """The first Gopher-style heuristic `text` fails under `cfg`'s thresholds, or None.

    In order (words = whitespace-separated tokens):
      quality_symbol_ratio      ('#' count + '...' count + '…' count) / words > max_symbol_ratio
      quality_mean_word_length  mean length of words, leading/trailing punctuation stripped and punctuation-only
                                tokens ignored, outside [min_mean_word_length, max_mean_word_length]
      quality_duplicate_lines   (non-blank lines that repeat an earlier line, after stripping) / non-blank lines
                                > max_duplicate_line_fraction
      quality_top_ngram         characters covered by the most frequent word 2-gram / characters in all words
                                > max_top_ngram_fraction. Words are lowercased; covered = occurrences x the two
                                words' lengths (overlapping occurrences count, as in Gopher); a 2-gram seen once
                                never fails; among equally frequent 2-grams the longest counts.
    For CJK-heavy text (see `is_cjk_heavy`) the mean-word-length and 2-gram checks are skipped and each CJK
    character counts as one word in the symbol ratio.
    """
    cjk_heavy = is_cjk_heavy(text)
    lower = [] if cjk_heavy else text.lower().split()
    return _quality(text, cfg, cjk_heavy, lower, _word_ids(lower))


def _word_ids(words: list[str]) -> np.ndarray:
    """CRC-32 of each word's UTF-8 bytes, as uint64 (shared by the 2-gram check and near-dedup shingles)."""
    # Words from str.split() hold no whitespace, so joining and splitting the bytes gives the same words back.
    data = " ".join(words).encode("utf-8", "surrogatepass")  # lone surrogates do occur in scraped text
    return np.fromiter(map(zlib.crc32, data.split()), dtype=np.uint64, count=len(words))


def _quality(text: str, cfg: FilterConfig, cjk_heavy: bool, lower: list[str], ids: np.ndarray) -> str | None:
    words = text.split()
    n_symbols = text.count("#") + text.count("...") + text.count("…")
    if n_symbols:
        if cjk_heavy:
            n_words = len(CJK_CHAR.findall(text)) + len(CJK_CHAR.sub(" ", text).split())
        else:
            n_words = len(words)
        if n_symbols > cfg.max_symbol_ratio * max(n_words, 1):
            return "quality_symbol_ratio"

    if not cjk_heavy:
        lengths = list(map(len, map(str.strip, words, itertools.repeat(_PUNCT))))
        n_real = len(lengths) - lengths.count(0)  # punctuation-only tokens do not count
        mean = sum(lengths) / n_real if n_real else 0.0
        if not cfg.min_mean_word_length <= mean <= cfg.max_mean_word_length:
            return "quality_mean_word_length"

    lines = [line for line in (raw.strip() for raw in text.splitlines()) if line]
    if len(lines) > 1 and (len(lines) - len(set(lines))) > cfg.max_duplicate_line_fraction * len(lines):
        return "quality_duplicate_lines"

    if not cjk_heavy and len(lower) > 2:
        # A 2-gram is a pair of word CRCs in one uint64; sorting the pairs gives the counts (5x faster than a
        # Counter of word tuples).
        pairs = (ids[:-1] << np.uint64(32)) | ids[1:]
        ordered = np.sort(pairs)
        edges = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1], [True])))
        top = int(np.diff(edges).max())
        if top > 1:
            lengths = np.fromiter(map(len, lower), dtype=np.int64, count=len(lower))
            pair_chars = lengths[:-1] + lengths[1:]
            limit = cfg.max_top_ngram_fraction * int(lengths.sum())
            if top * int(pair_chars.max()) > limit:  # a cheap bound first: most documents stop here
                _, inverse, counts = np.unique(pairs, return_inverse=True, return_counts=True)
                if top * int(pair_chars[counts[inverse] == top].max()) > limit:
                    return "quality_top_ngram"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Near dedup: MinHash + LSH


@functools.lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH picks for this threshold: the (b, r) with b*r <= num_perm
    minimising the false-positive plus false-negative probability mass around the threshold (~0.1 s, cached)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


@functools.lru_cache(maxsize=32)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Affine permutations h -> a*h + b mod 2^32 (a odd: a bijection), drawn exactly as datasketch >= 2.0 draws its
    "affine32" ones for the same seed, so signatures are interchangeable with datasketch's."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (the pre-mix of datasketch's affine32 scheme)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class MinHashDeduper:
    """Streaming near-duplicate detection: MinHash signatures of shingle sets, banded LSH over the kept ones.

    Shingles: word 5-grams of the lowercased, whitespace-split text, or character 5-grams (whitespace removed) for
    CJK-heavy text. Each word is hashed with CRC-32 and each n-gram by a random multilinear combination of its
    units (mod 2^64, top 32 bits), all vectorised in numpy and deterministic across processes.

    Signatures follow datasketch's "affine32" MinHash exactly (its seeded permutation parameters, the MurmurHash3
    pre-mix, h -> a*h + b mod 2^32, the minimum per permutation): `signature(text)` equals
    `datasketch.MinHash(num_perm, seed, hashfunc=lambda x: x, scheme="affine32")` updated with
    `shingle_hashes(text)`, but computed in one numpy pass instead of a Python call per shingle.

    LSH: the signature is cut into b bands of r rows, (b, r) as datasketch's MinHashLSH chooses for the threshold
    (128 permutations at 0.8: b=9, r=13). A document is a near duplicate when any band equals that band of an
    earlier kept document, so P(drop | Jaccard s) = 1 - (1 - s^r)^b (`drop_probability`), an S-curve around the
    threshold: 0.001 at s=0.5, 0.08 at 0.7, 0.40 at 0.8, 0.93 at 0.9, 0.998 at 0.95. Only a 64-bit key per band is
    stored (Python ints in one set), about 0.75 KB per kept document at b=9 (measured).
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-dedup threshold must be in (0, 1], got {threshold}")
        if num_perm < 2:
            raise ValueError(f"minhash_perms must be >= 2, got {num_perm}")
        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed
        self.bands, self.rows = lsh_params(float(threshold), int(num_perm))
        self._a, self._b = _permutations(num_perm, seed)
        rng = np.random.default_rng(seed)
        self._unit_mult = rng.integers(0, 2**63, ngram, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._band_mult = rng.integers(0, 2**63, (self.bands, self.rows), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._band_salt = rng.integers(0, 2**63, self.bands, dtype=np.uint64)
        self._keys: set[int] = set()
        self.size = 0  # documents remembered

    def shingle_hashes(
        self, text: str, cjk_heavy: bool | None = None, word_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """uint32 hash of every shingle (with repeats); a text shorter than one shingle is one shingle.

        `word_ids` (optional) is `_word_ids(text.lower().split())`, when the caller already has it.
        """
        if cjk_heavy is None:
            cjk_heavy = is_cjk_heavy(text)
        if cjk_heavy:
            chars = "".join(text.split()).encode("utf-32-le", "surrogatepass")
            units = np.frombuffer(chars, dtype=np.uint32).astype(np.uint64)
        else:
            units = word_ids if word_ids is not None else _word_ids(text.lower().split())
        n = self.ngram
        if len(units) == 0:
            return np.zeros(0, dtype=np.uint32)
        if len(units) < n:
            units = np.concatenate([units, np.zeros(n - len(units), dtype=np.uint64)])
        m = len(units) - n + 1
        h = units[:m] * self._unit_mult[0]
        for k in range(1, n):
            h += units[k : k + m] * self._unit_mult[k]
        return (h >> np.uint64(32)).astype(np.uint32)

    def signature(self, text: str, cjk_heavy: bool | None = None, word_ids: np.ndarray | None = None) -> np.ndarray:
        """The MinHash signature (uint32, num_perm values) of `text`'s shingle set."""
        return self.signature_of_hashes(self.shingle_hashes(text, cjk_heavy, word_ids))

    def signature_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        sig = np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        hv = _fmix32(np.asarray(hashes, dtype=np.uint32))
        for i in range(0, len(hv), 8192):  # bounded [num_perm, chunk] temporaries for long documents
            perm = np.multiply.outer(self._a, hv[i : i + 8192])  # uint32 arithmetic wraps: mod 2^32
            perm += self._b[:, None]
            np.minimum(sig, perm.min(axis=1), out=sig)  # reducing along the contiguous axis: 3x faster
        return sig

    def band_keys(self, sig: np.ndarray) -> list[int]:
        bands = sig[: self.bands * self.rows].reshape(self.bands, self.rows).astype(np.uint64)
        return ((bands * self._band_mult).sum(axis=1) ^ self._band_salt).tolist()

    def drop_probability(self, similarity: float) -> float:
        """P(a document is dropped | Jaccard similarity with one kept document) under this banding."""
        return 1.0 - (1.0 - similarity**self.rows) ** self.bands

    def check_and_add(self, text: str, cjk_heavy: bool | None = None, word_ids: np.ndarray | None = None) -> bool:
        """True if `text` is a near duplicate of a remembered document; otherwise remember it and return False."""
        keys = self.band_keys(self.signature(text, cjk_heavy, word_ids))
        if not self._keys.isdisjoint(keys):
            return True
        self._keys.update(keys)
        self.size += 1
        return False


# ----------------------------------------------------------------------------------------------------------------
# The filter


def exact_key(text: str) -> bytes:
    """128-bit BLAKE2b digest of the whitespace-normalised text (runs of whitespace -> one space, ends stripped)."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class DocumentFilter:
    """Streaming document filter configured by a `FilterConfig`; see the module docstring for the checks.

    `reason(text)` returns None to keep the document, or the name of the first check it fails (see `REASONS`), and
    updates the dedup state and the counters: `counts` (Counter of drop reasons), `seen`, `kept`.
    """

    def __init__(self, cfg: FilterConfig | None = None):
        cfg = cfg if cfg is not None else FilterConfig()
        if cfg.min_chars < 0 or cfg.max_chars < cfg.min_chars:
            raise ValueError(f"filters: need 0 <= min_chars <= max_chars, got {cfg.min_chars} and {cfg.max_chars}")
        if cfg.min_mean_word_length > cfg.max_mean_word_length:
            raise ValueError("filters: min_mean_word_length is above max_mean_word_length")
        self.cfg = cfg
        self.keywords: KeywordMatcher | None = None
        if cfg.min_keyword_hits > 0:
            terms = resolve_keywords(list(cfg.keywords))
            if not terms:
                raise ValueError(
                    "filters.min_keyword_hits > 0 needs filters.keywords, e.g. ['@finance'] for the built-in lexicon"
                )
            self.keywords = KeywordMatcher(terms)
        self.near: MinHashDeduper | None = None
        if cfg.near_dedup:
            self.near = MinHashDeduper(cfg.near_dedup_threshold, cfg.minhash_perms)
        self._exact: set[bytes] = set()
        self.counts: Counter[str] = Counter()
        self.seen = 0
        self.kept = 0

    def reason(self, text: str) -> str | None:
        """None to keep `text`, else the reason it is dropped. Kept documents are remembered for dedup."""
        why = self._reason(text)
        self.seen += 1
        if why is None:
            self.kept += 1
        else:
            self.counts[why] += 1
        return why

    def keep(self, text: str) -> bool:
        return self.reason(text) is None

    def summary(self) -> dict:
        """{"seen", "kept", "dropped": {reason: count}} for reports."""
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.counts)}

    def _reason(self, text: str) -> str | None:
        cfg = self.cfg
        if not text or text.isspace():
            return "min_chars"
        if len(text) < cfg.min_chars:
            return "min_chars"
        if len(text) > cfg.max_chars:
            return "max_chars"
        if self.keywords is not None and self.keywords.hits(text) < cfg.min_keyword_hits:
            return "keywords"
        cjk_heavy, lower, ids = False, [], None
        if cfg.quality or self.near is not None:
            cjk_heavy = is_cjk_heavy(text)
            lower = [] if cjk_heavy else text.lower().split()
            ids = _word_ids(lower)
        if cfg.quality:
            why = _quality(text, cfg, cjk_heavy, lower, ids)
            if why is not None:
                return why
        if cfg.exact_dedup:
            key = exact_key(text)
            if key in self._exact:
                return "exact_duplicate"
            self._exact.add(key)
        if self.near is not None and self.near.check_and_add(text, cjk_heavy, ids):
            return "near_duplicate"
        return None
