"""Document filters: finance lexicon, keyword matching, Gopher quality heuristics, exact and MinHash near dedup.

Oracles are independent of the code under test: hand-counted sentences, `str.count` and a plain tokeniser on real
text, statistics recomputed here with Counter/sets, the true Jaccard similarity of shingle sets, and datasketch's
own MinHash. Real text comes from the shared data folder (`JAXFIN_SHARED_DATA`, default `<repo>/../shared/data`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import re
import string
from collections import Counter
from pathlib import Path

import datasketch
import numpy as np
import pytest

from jaxfin.config.schema import FilterConfig
from jaxfin.data.filters import (
    REASONS,
    DocumentFilter,
    KeywordMatcher,
    MinHashDeduper,
    exact_key,
    is_cjk_heavy,
    quality_reasons,
)
from jaxfin.data.lexicon import FINANCE_EN, FINANCE_ZH, resolve_keywords

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("JAXFIN_SHARED_DATA", str(REPO.parent / "shared" / "data")))


def data_file(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.fail(
            f"test data {path} is missing: these tests need the shared data folder; "
            "set JAXFIN_SHARED_DATA to it (it holds finance_corpus_en/, zh_corpus/, ...)"
        )
    return path


def jsonl(rel: str) -> list[dict]:
    with open(data_file(rel), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def beige() -> list[str]:
    return [r["text"] for r in jsonl("finance_corpus_en/beige_book_2014_2020.jsonl")]


@pytest.fixture(scope="module")
def cn_laws() -> list[dict]:
    return jsonl("zh_corpus/cn_finance_laws_zh_hans.jsonl")


@pytest.fixture(scope="module")
def tw_laws() -> list[dict]:
    return jsonl("zh_corpus/tw_finance_laws_zh_hant.jsonl")


# ---------------------------------------------------------------------------------------------------------------
# Lexicon

# Characters that exist in only one script (an independent check that both scripts are really present).
TRADITIONAL_ONLY = set("貨幣資產負債證銀貸監會國稅險匯與勞動實應經營內帳")
SIMPLIFIED_ONLY = set("货币资产负债证银贷监会国税险汇与劳动实应经营内账")


def test_lexicon_sorted_unique_and_both_scripts():
    for terms in (FINANCE_EN, FINANCE_ZH):
        assert terms and isinstance(terms, tuple)
        assert list(terms) == sorted(terms)
        assert len(set(terms)) == len(terms)
        assert all(t == t.strip() and t for t in terms)
    assert len({t.lower() for t in FINANCE_EN}) == len(FINANCE_EN)  # matching is case-insensitive
    assert 150 <= len(FINANCE_EN) <= 300
    assert 100 <= len(FINANCE_ZH) <= 300
    cjk = re.compile(r"[\u4e00-\u9fff]")
    assert not any(cjk.search(t) for t in FINANCE_EN)
    assert all(cjk.search(t) for t in FINANCE_ZH)
    n_trad = sum(1 for t in FINANCE_ZH if set(t) & TRADITIONAL_ONLY)
    n_simp = sum(1 for t in FINANCE_ZH if set(t) & SIMPLIFIED_ONLY)
    assert n_trad >= 40 and n_simp >= 40, (n_trad, n_simp)
    for term in ["basis points", "EBITDA", "balance sheet", "yield curve", "collateral", "Tier 1 capital"]:
        assert term in FINANCE_EN
    for term in [
        "利率",
        "貨幣政策",
        "货币政策",
        "資產負債表",
        "资产负债表",
        "證券",
        "证券",
        "銀行",
        "银行",
        "信貸",
        "信贷",
    ]:
        assert term in FINANCE_ZH
    for term in ["通膨", "通胀", "金融監督管理委員會", "金融监督管理委员会"]:
        assert term in FINANCE_ZH


def test_resolve_keywords():
    both = resolve_keywords(["@finance"])
    assert both == list(FINANCE_EN) + list(FINANCE_ZH)
    assert resolve_keywords(["@finance_en"]) == list(FINANCE_EN)
    assert resolve_keywords(["@finance_zh"]) == list(FINANCE_ZH)
    # own words kept in order, blanks dropped, duplicates (also via a lexicon) kept once
    assert resolve_keywords(["  hedging ", "", "EBITDA", "@finance_en", "hedging"])[:3] == ["hedging", "EBITDA", "10-K"]
    assert len(resolve_keywords(["EBITDA", "@finance_en"])) == len(FINANCE_EN)
    with pytest.raises(ValueError, match="@finance_en"):
        resolve_keywords(["@finanse"])


# ---------------------------------------------------------------------------------------------------------------
# Keyword matching: hand-counted sentences


def test_english_word_boundaries_case_and_plurals():
    rate = KeywordMatcher(["rate"])
    # rate, rates, RATE, Rate(-setting) = 4; not pirate, rated, irate, ratepayer
    assert rate.hits("The pirate rated the rate; rates rose, the RATE fell. Rate-setting, irate ratepayers.") == 4
    fed = KeywordMatcher(["fed"])
    assert fed.hits("We fed the ducks and paid the feed bill at the federal building; the Fed met.") == 2
    plural = KeywordMatcher(["liability", "equity", "loss", "bank"])
    text = "Liabilities rose; equities fell; losses hit two banks and one bank's branch. Bankers, lossy equityholders."
    assert plural.hits(text) == 5


def test_english_phrases_longest_match_and_hyphens():
    m = KeywordMatcher(["interest rate", "interest rate swap", "balance sheet"])
    # "Interest rate swaps" once (the longer term wins), "interest\nrates" across a line break, "balance sheet"
    assert m.hits("Interest rate swaps hedge interest\nrates, not the balance  sheet.") == 3
    assert m.findall("Interest rate swaps") == ["interest rate swaps"]
    nested = KeywordMatcher(["bank", "holding company", "bank holding company"])
    assert nested.hits("A bank holding company owns a bank; a holding company may not.") == 3  # longest, then 2 more
    zh = KeywordMatcher(["銀行", "中央銀行", "貨幣", "貨幣政策"])
    assert zh.findall("中央銀行的貨幣政策") == ["中央銀行", "貨幣政策"]
    h = KeywordMatcher(["non-performing loan", "write-off"])
    assert (
        h.hits("Non-performing loans, nonperforming loans and non performing loans led to write-offs and a write off.")
        == 5
    )
    assert KeywordMatcher(["GDP"]).hits("以GDP計算的增長；GDPs") == 2  # next to CJK characters is a boundary
    assert (
        KeywordMatcher(["S&P 500", "P/E ratio"]).hits("The S&P 500 trades at a P/E ratio of 20; P/E ratios vary.") == 3
    )


def test_builtin_english_lexicon_sentences():
    en = KeywordMatcher(resolve_keywords(["@finance_en"]))
    # "Fed" (= fed) is deliberately not a lexicon term, nor "rate" or "bill" alone
    assert (
        en.hits("We fed the ducks, paid the feed bill at the federal building, and the pirate rated the parrot.") == 0
    )
    # Federal Reserve, federal funds rate, basis points, yield curve, banks, credit
    text = (
        "The Federal Reserve raised the federal funds rate by 25 basis points; "
        "the yield curve inverted and banks tightened credit."
    )
    assert en.hits(text) == 6


def test_chinese_substrings_both_scripts():
    zh = KeywordMatcher(resolve_keywords(["@finance_zh"]))
    # 中央銀行 (not also 央行/銀行), 利率, 貨幣政策 (not also 貨幣)
    assert zh.hits("中央銀行調整利率，貨幣政策轉向寬鬆。") == 3
    assert zh.hits("中央银行调整利率，货币政策转向宽松。") == 3
    # 金融監督管理委員會 (not also 金融), 銀行, 資本適足率 (Taiwan term), 通膨 (Taiwan term)
    assert zh.hits("金融監督管理委員會要求銀行提高資本適足率，以因應通膨。") == 4
    assert zh.hits("金融监督管理委员会要求银行提高资本充足率，以应对通胀。") == 4
    assert zh.hits("银行银行銀行") == 3
    # the scripts are different strings: one form does not match the other
    assert KeywordMatcher(["銀行"]).hits("中央银行") == 0
    assert KeywordMatcher(["银行"]).hits("中央銀行") == 0
    both = KeywordMatcher(resolve_keywords(["@finance"]))
    assert both.hits("The bond market: 债券市场的利率 and 收益率 moved 30 basis points.") == 5


def test_keyword_counts_match_independent_oracles_on_real_text(beige, cn_laws, tw_laws):
    # English: a single alphabetic term matches exactly the tokens term/term+s/term+es when the text is split at
    # every non-alphanumeric character.
    sample = " ".join(beige[::8])  # 2014-2020
    tokens = Counter(re.split(r"[^a-z0-9]+", sample.lower()))
    for term in ["loan", "inflation", "mortgage", "deposit", "credit", "tariff"]:
        expected = tokens[term] + tokens[term + "s"] + tokens[term + "es"]
        assert KeywordMatcher([term]).hits(sample) == expected, term
        assert expected > 0
    # Chinese: a single term counts like str.count; each script's laws use that script's forms only.
    cn = "\n".join(r["text"] for r in cn_laws)
    tw = "\n".join(r["text"] for r in tw_laws)
    for simplified, traditional in [("证券", "證券"), ("银行", "銀行"), ("货币", "貨幣"), ("债券", "債券")]:
        assert KeywordMatcher([simplified]).hits(cn) == cn.count(simplified) > 0
        assert KeywordMatcher([traditional]).hits(tw) == tw.count(traditional) > 0
        assert KeywordMatcher([traditional]).hits(cn) == 0
        assert KeywordMatcher([simplified]).hits(tw) == 0


def test_chinese_lexicon_matches_real_finance_laws(cn_laws, tw_laws):
    zh = KeywordMatcher(resolve_keywords(["@finance_zh"]))
    cn_hits = [zh.hits(r["text"]) for r in cn_laws]
    tw_hits = [zh.hits(r["text"]) for r in tw_laws]
    assert min(cn_hits) >= 10, min(cn_hits)  # every PRC finance law (Simplified)
    assert np.mean([h >= 10 for h in tw_hits]) >= 0.9  # Taiwan laws and regulations (Traditional), some very short
    assert np.mean([h >= 3 for h in tw_hits]) >= 0.95
    # the bank acts mention banks: 商业银行法 / 銀行法
    assert zh.hits(next(r["text"] for r in cn_laws if r["short_name"] == "商业银行法")) >= 100
    assert zh.hits(next(r["text"] for r in tw_laws if r["name"] == "銀行法")) >= 100


def test_keyword_filter_separates_finance_from_shakespeare(beige):
    text = data_file("general_text_tinyshakespeare/tinyshakespeare.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    plays = ["\n".join(lines[i : i + 100]) for i in range(0, len(lines), 100)]  # ~2.8K-character documents
    cfg = FilterConfig(keywords=["@finance"], min_keyword_hits=3, exact_dedup=False)
    filt = DocumentFilter(cfg)
    shakespeare_pass = np.mean([filt.reason(doc) is None for doc in plays])
    beige_pass = np.mean([filt.reason(doc) is None for doc in beige])
    print(f"\nkeyword filter (min hits 3): Shakespeare pass {shakespeare_pass:.3f}, Beige Book pass {beige_pass:.3f}")
    assert shakespeare_pass <= 0.05
    assert beige_pass >= 0.95
    assert set(filt.counts) == {"keywords"}


# ---------------------------------------------------------------------------------------------------------------
# Gopher quality heuristics

DEFAULT = FilterConfig()


def sentences(doc: str) -> list[str]:
    return [s.strip() + "." for s in doc.split(". ") if len(s.split()) >= 5]


def relaxed(reason: str) -> FilterConfig:
    """The default config with only `reason`'s threshold made harmless."""
    field = {
        "quality_symbol_ratio": {"max_symbol_ratio": 10.0},
        "quality_mean_word_length": {"min_mean_word_length": 0.0, "max_mean_word_length": 1000.0},
        "quality_duplicate_lines": {"max_duplicate_line_fraction": 1.0},
        "quality_top_ngram": {"max_top_ngram_fraction": 1.0},
    }[reason]
    return dataclasses.replace(DEFAULT, **field)


def assert_fails_only(text: str, reason: str):
    assert quality_reasons(text, DEFAULT) == reason
    assert quality_reasons(text, relaxed(reason)) is None  # no other rule fails


def test_beige_book_passes_quality_at_defaults(beige):
    reasons = Counter(quality_reasons(doc, DEFAULT) for doc in beige)
    rate = reasons[None] / len(beige)
    print(f"\nquality filter, Beige Book 2014-2020: pass rate {rate:.4f} of {len(beige)} docs; drops {dict(reasons)}")
    assert rate >= 0.95


def test_symbol_ratio(beige):
    words = beige[0].split()[:400]
    assert quality_reasons(" ".join(words), DEFAULT) is None
    # one "..." after every 5th word: 80 symbols / 400 words = 0.2 > 0.1
    dots = " ".join(w + ("..." if i % 5 == 4 else "") for i, w in enumerate(words))
    assert_fails_only(dots, "quality_symbol_ratio")
    # "#" and "…" count too: 40 "…" and 20 "#word" tokens in 420 words = 0.14 > 0.1
    mixed = " ".join(w + ("…" if i % 10 == 0 else "") + (" #" + w if i % 20 == 5 else "") for i, w in enumerate(words))
    assert mixed.count("#") + mixed.count("…") == 60 and len(mixed.split()) == 420
    assert_fails_only(mixed, "quality_symbol_ratio")
    # 20 ellipses in 400 words = 0.05: fine
    few = " ".join(w + ("..." if i % 20 == 19 else "") for i, w in enumerate(words))
    assert quality_reasons(few, DEFAULT) is None


def test_mean_word_length(beige):
    words = beige[1].split()[:400]
    clean = [w.strip(string.punctuation) for w in words]
    mean = np.mean([len(w) for w in clean if w])
    assert 3.0 <= mean <= 10.0 and quality_reasons(" ".join(words), DEFAULT) is None
    # each word cut to its first two characters: mean <= 2
    assert_fails_only(" ".join(w[:2] for w in words), "quality_mean_word_length")
    # three words run together: mean ~15
    glued = [words[i] + words[i + 1] + words[i + 2] for i in range(0, len(words) - 2, 3)]
    assert np.mean([len(w.strip(string.punctuation)) for w in glued]) > 10
    assert_fails_only(" ".join(glued), "quality_mean_word_length")


def test_duplicate_lines(beige):
    lines = sentences(beige[2])[:20]
    assert len(set(lines)) == 20
    assert quality_reasons("\n".join(lines), DEFAULT) is None
    dup7 = "\n".join(lines + lines[:7])  # 7 duplicates of 27 lines = 0.26: fine
    assert quality_reasons(dup7, DEFAULT) is None
    dup10 = "\n".join(lines + lines[:10])  # 10 of 30 = 0.33 > 0.3
    assert_fails_only(dup10, "quality_duplicate_lines")
    # blank lines and surrounding whitespace do not count as distinct or duplicate lines
    spaced = "\n\n".join(lines + ["  " + s + " " for s in lines[:10]])
    assert_fails_only(spaced, "quality_duplicate_lines")


def top_bigram_fraction(text: str) -> float:
    """Characters in the most frequent word 2-gram / characters in words (Gopher), written out with a Counter."""
    words = text.lower().split()
    counts = Counter(zip(words, words[1:]))
    top = max(counts.values())
    covered = max(top * (len(a) + len(b)) for (a, b), c in counts.items() if c == top)
    return covered / sum(len(w) for w in words) if top > 1 else 0.0


def test_top_ngram(beige):
    base = " ".join(beige[3].split()[:300])
    assert top_bigram_fraction(base) < 0.05 and quality_reasons(base, DEFAULT) is None
    decisions = []
    for k in [5, 20, 40, 60, 80, 120, 200]:
        text = base + " interest rates" * k
        frac = top_bigram_fraction(text)
        if abs(frac - DEFAULT.max_top_ngram_fraction) < 0.01:
            continue  # too close to the threshold to call
        want = "quality_top_ngram" if frac > DEFAULT.max_top_ngram_fraction else None
        got = quality_reasons(text, DEFAULT)
        decisions.append((k, round(frac, 3), want, got))
        if want:
            assert_fails_only(text, want)
    assert all(want == got for _, _, want, got in decisions), decisions
    assert {want for *_, want, _ in decisions} == {None, "quality_top_ngram"}  # both sides were tested


def test_cjk_text_skips_word_heuristics(cn_laws, tw_laws):
    laws = [law["text"] for law in cn_laws + tw_laws]
    assert all(is_cjk_heavy(text) for text in laws)
    # On whitespace "words" (a whole article, or "第 5 條") the mean-word-length rule would drop nearly every law ...
    means = [np.mean([len(t) for t in text.split()]) for text in laws]
    assert np.mean([not 3.0 <= m <= 10.0 for m in means]) > 0.9
    # ... but for CJK-heavy text it is skipped, and real laws pass.
    assert [quality_reasons(text, DEFAULT) for text in laws] == [None] * len(laws)
    # but the line and symbol rules still apply to CJK text
    lines = [line for line in cn_laws[0]["text"].splitlines() if line.strip()][:20]
    assert len(set(lines)) == 20
    assert quality_reasons("\n".join(lines + lines[:10]), DEFAULT) == "quality_duplicate_lines"
    chars = "".join("".join(lines).split())[:400]  # no whitespace at all
    ellipses = "".join(c + ("……" if i % 10 == 9 else "") for i, c in enumerate(chars))  # 0.2 per character
    assert quality_reasons(ellipses, DEFAULT) == "quality_symbol_ratio"
    # one "……" in 400 characters is ordinary Chinese prose, though the text is a single whitespace "word"
    assert len((chars + "……").split()) == 1 and quality_reasons(chars + "……", DEFAULT) is None
    assert not is_cjk_heavy("The 中央銀行 raised rates again this quarter, citing strong growth.")


# ---------------------------------------------------------------------------------------------------------------
# DocumentFilter: order, counts, exact and near dedup


def test_filter_order_and_counts(beige):
    cfg = FilterConfig(min_chars=50, max_chars=20_000, keywords=["@finance"], min_keyword_hits=3, quality=True)
    filt = DocumentFilter(cfg)
    doc = beige[0]
    assert filt.reason("") == "min_chars"
    assert filt.reason(" \n\t ") == "min_chars"
    assert filt.reason("Interest rate, bank, loan.") == "min_chars"
    assert filt.reason(doc * 5) == "max_chars"
    assert (
        filt.reason("The weather was mild and the harvest good; the farmers sang all evening in the barn.")
        == "keywords"
    )
    assert filt.reason(" ".join(w[:2] for w in doc.split()) + " bank loan credit") == "quality_mean_word_length"
    assert filt.reason(doc) is None
    assert filt.reason("  " + doc.replace(" ", "\n", 5) + "\n") == "exact_duplicate"
    assert filt.counts == Counter(
        {"min_chars": 3, "max_chars": 1, "keywords": 1, "quality_mean_word_length": 1, "exact_duplicate": 1}
    )
    assert (filt.seen, filt.kept) == (8, 1)
    assert filt.summary()["dropped"] == dict(filt.counts)
    assert set(filt.counts) <= set(REASONS)


def test_exact_dedup_whitespace_only(beige):
    filt = DocumentFilter(FilterConfig())  # exact dedup is on by default
    a = beige[5]
    assert filt.reason(a) is None
    assert filt.reason("\n" + a.replace(". ", ".\n\n").replace(" ", " \t ") + "  ") == "exact_duplicate"
    assert filt.reason(a.replace("District", "district", 1)) is None  # one character differs: a different document
    assert filt.reason(a + " .") is None
    assert exact_key("a  b\nc") == exact_key(" a b c ") != exact_key("a b  c d")
    assert len(exact_key(a)) == 16  # 128-bit digests only
    assert all(len(k) == 16 for k in filt._exact)


def shingles(text: str, n: int = 5) -> set:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def edit_words(text: str, positions) -> str:
    words = text.split()
    for i in positions:
        words[i] = f"zq{i}x"
    return " ".join(words)


def test_near_dedup_agrees_with_true_jaccard(beige):
    rng = random.Random(0)
    cfg = FilterConfig(near_dedup=True, exact_dedup=False)
    above = below = 0
    for doc in beige[::34][:20]:
        n = len(doc.split())
        variants = [edit_words(doc, rng.sample(range(n), k)) for k in (1, 2, 3)]
        variants += [edit_words(doc, rng.sample(range(n), int(n * p))) for p in (0.1, 0.2, 0.5)]
        for variant in variants:
            sim = jaccard(shingles(doc), shingles(variant))
            if 0.5 < sim < 0.95:
                continue  # the LSH S-curve's grey zone: not called either way
            filt = DocumentFilter(cfg)
            assert filt.reason(doc) is None
            got = filt.reason(variant)
            assert got == ("near_duplicate" if sim >= 0.95 else None), (sim, got)
            above += sim >= 0.95
            below += sim <= 0.5
    assert above >= 40 and below >= 40, (above, below)


def test_near_dedup_streaming_keeps_unrelated(beige):
    docs = beige[:60]
    sims = [jaccard(shingles(a), shingles(b)) for a, b in zip(docs, docs[1:])]
    assert max(sims) < 0.5
    filt = DocumentFilter(FilterConfig(near_dedup=True))
    assert [filt.reason(d) for d in docs] == [None] * len(docs)
    copy = edit_words(docs[7], [10, 200, 400])
    assert jaccard(shingles(docs[7]), shingles(copy)) >= 0.95
    assert filt.reason(copy) == "near_duplicate"
    assert filt.reason(docs[7]) == "exact_duplicate"  # exact dedup runs first
    assert filt.reason(beige[100]) is None
    assert filt.counts == Counter({"near_duplicate": 1, "exact_duplicate": 1})
    assert filt.near.size == len(docs) + 1


def test_near_dedup_chinese_character_shingles(cn_laws):
    def char_shingles(text: str) -> set:
        chars = "".join(text.split())
        return {chars[i : i + 5] for i in range(len(chars) - 4)}

    laws = [r["text"] for r in cn_laws if 5000 < len(r["text"]) < 15000][:6]
    assert len(laws) >= 4
    filt = DocumentFilter(FilterConfig(near_dedup=True, exact_dedup=False))
    for law in laws:
        assert filt.reason(law) is None
    base = laws[0]
    edited = base[:1000] + "甲" + base[1001:3000] + "乙" + base[3001:]
    assert jaccard(char_shingles(base), char_shingles(edited)) >= 0.95
    assert filt.reason(edited) == "near_duplicate"
    other = jaccard(char_shingles(laws[1]), char_shingles(laws[2]))
    assert other <= 0.5


def test_minhash_signature_matches_reference_and_datasketch(beige):
    dedup = MinHashDeduper(threshold=0.8, num_perm=128)
    hashes = dedup.shingle_hashes(beige[0])
    signature = dedup.signature_of_hashes(hashes)
    # the formula written out with Python ints: murmur3 fmix32, then min over shingles of (a*h + b) mod 2^32
    a, b = (int(x) for x in dedup._a[:8]), (int(x) for x in dedup._b[:8])
    mixed = []
    for h in hashes.tolist():
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        mixed.append(h ^ (h >> 16))
    reference = [min((ai * h + bi) & 0xFFFFFFFF for h in mixed) for ai, bi in zip(a, b)]
    assert signature[:8].tolist() == reference
    assert len(set(hashes.tolist())) > 0.99 * len(hashes)  # 5-gram hashes of real prose hardly collide
    # and the same as datasketch's own "affine32" MinHash (datasketch >= 2.0) fed the same shingle hashes
    if "scheme" in inspect.signature(datasketch.MinHash).parameters:
        theirs = datasketch.MinHash(num_perm=128, seed=1, hashfunc=lambda x: x, scheme="affine32")
        theirs.update_batch(hashes.tolist())
        np.testing.assert_array_equal(signature, theirs.hashvalues)
    # the estimate follows the true Jaccard (std <= 0.045 at 128 permutations)
    rng = random.Random(1)
    for p in (0.02, 0.05, 0.1, 0.2):
        doc = beige[rng.randrange(len(beige))]
        n = len(doc.split())
        variant = edit_words(doc, rng.sample(range(n), int(n * p)))
        true = jaccard(shingles(doc), shingles(variant))
        estimate = float(np.mean(dedup.signature(doc) == dedup.signature(variant)))
        assert abs(estimate - true) < 0.15, (p, true, estimate)
    # banding as datasketch's MinHashLSH picks it, and its S-curve around the threshold
    lsh = datasketch.MinHashLSH(threshold=0.8, num_perm=128)
    assert (dedup.bands, dedup.rows) == (lsh.b, lsh.r)
    assert dedup.drop_probability(0.95) > 0.99 and dedup.drop_probability(0.5) < 0.01


def test_robust_inputs_and_config_errors():
    filt = DocumentFilter(FilterConfig(quality=True, near_dedup=True, keywords=["@finance"], min_keyword_hits=1))
    odd = "Bank loans \ud800 rose 5 percent on higher credit demand; deposits fell at the central bank."
    assert filt.reason(odd) is None  # a lone surrogate (seen in scraped JSON) must not crash hashing
    assert filt.reason("中央銀行\ud800調整利率，貨幣政策轉向寬鬆。" * 3) is None  # CJK path (character shingles)
    assert DocumentFilter(FilterConfig(near_dedup=True, exact_dedup=False)).reason("word") is None  # < 1 shingle
    with pytest.raises(ValueError, match="keywords"):
        DocumentFilter(FilterConfig(min_keyword_hits=2))
    with pytest.raises(ValueError, match="unknown keyword lexicon"):
        DocumentFilter(FilterConfig(keywords=["@nope"], min_keyword_hits=1))
    with pytest.raises(ValueError, match="threshold"):
        DocumentFilter(FilterConfig(near_dedup=True, near_dedup_threshold=1.5))
