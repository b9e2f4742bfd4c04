"""Synthetic English finance corpus and SentencePiece tokenizer for the jaxfin demo and smoke tests.

The project ships no third-party text: everything in ``demo_data/`` is produced by this package from the
templates and word tables in ``words.py``, filled by a seeded ``random.Random``, so it is license-free and
reproducible byte for byte. All companies, people, brokers, rating agencies, central banks, countries and indexes
are fictional. This module holds the logic: number derivations, one builder per document type, assembly, files, CLI.

Numbers inside a document are derived from one another (growth from the prior and current figures, EPS
from net income and share count, yields from Treasury yield plus spread, savings from size times basis
points), so a tiny model has real structure to learn beyond surface phrasing. Twenty document types with
several phrasings per sentence keep it from being memorised within a demo run.

Regenerate the shipped data from the repository root with ``python -m tools.demo_corpus --out demo_data``
(this folder is part of the checkout, not of the installed ``jaxfin`` package).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import words

TRAIN_FILE = "finance_train.jsonl"
DEV_FILE = "finance_dev.jsonl"
TOKENIZER_FILE = "tokenizer.model"
# Dev uses a far-away seed so the two streams never coincide for any sane ``seed``.
DEV_SEED_OFFSET = 1_000_003
MIN_WORDS, MAX_WORDS = 80, 400
# Shipped defaults, sized to keep demo_data/ under ~3 MB.
DEFAULT_N_TRAIN, DEFAULT_N_DEV, DEFAULT_VOCAB = 3000, 150, 1024

_LAST_IG = words.RATING_SCALE.index("BBB-")


@dataclass(frozen=True)
class _Company:
    name: str
    short: str
    ticker: str
    sector: words.Sector
    exchange: str
    city: str
    ceo: str
    cfo: str
    employees: int
    shares_m: float  # shares outstanding, millions
    revenue_m: float  # annual revenue, millions of dollars
    eps: float  # trailing annual earnings per share
    price: float  # share price, consistent with eps via a sector-free P/E of 10-35


# ---------------------------------------------------------------------------------------------------------
# Formatting helpers: every number is rounded the way it is printed *before* anything is derived from it,
# so relations between printed numbers hold up to the last printed digit.
# ---------------------------------------------------------------------------------------------------------


def _round_m(m: float) -> float:
    """Round an amount in millions to what ``_money`` prints."""
    if m >= 1000:
        return round(m / 10) * 10.0
    if m >= 100:
        return float(round(m))
    return round(m, 1)


def _money(m: float) -> str:
    """Dollar amount given in millions: "$4.21 billion", "$375 million", "$12.5 million"."""
    m = _round_m(m)
    if m >= 1000:
        return "$" + f"{m / 1000:.2f}".rstrip("0").rstrip(".") + " billion"
    if m >= 100:
        return f"${m:,.0f} million"
    return "$" + f"{m:.1f}".rstrip("0").rstrip(".") + " million"


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def _pct(x: float, nd: int = 1) -> str:
    return f"{x:.{nd}f}%"


def _change(prev: float, cur: float) -> float:
    return round((cur / prev - 1.0) * 100.0, 1)


def _move(
    rng: random.Random, pct: float, up: tuple[str, ...] = words.UP_VERBS, down: tuple[str, ...] = words.DOWN_VERBS
) -> str:
    """Verb phrase for a percentage change, e.g. "rose 12.4%"; a change that rounds to zero reads as flat."""
    if pct > 0:
        return f"{rng.choice(up)} {_pct(pct)}"
    if pct < 0:
        return f"{rng.choice(down)} {_pct(-pct)}"
    return "was unchanged"


def _updown(pct: float) -> str:
    return f"up {_pct(pct)}" if pct > 0 else f"down {_pct(-pct)}" if pct < 0 else "unchanged"


def _growth(rng: random.Random, lo: float, hi: float, min_abs: float = 0.01) -> float:
    """Uniform growth rate in [lo, hi] at least ``min_abs`` away from zero, so no sentence says "rose 0.0%"."""
    while True:
        g = rng.uniform(lo, hi)
        if abs(g) >= min_abs:
            return g


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _poss(name: str) -> str:
    return name + ("'" if name.endswith("s") else "'s")


def _say(rng: random.Random, templates: tuple[str, ...], **slots: object) -> str:
    return rng.choice(templates).format(**slots)


def _person(rng: random.Random) -> str:
    return f"{rng.choice(words.FIRST_NAMES)} {rng.choice(words.LAST_NAMES)}"


def _company(rng: random.Random, sector: words.Sector | None = None) -> _Company:
    sector = sector or rng.choice(words.SECTORS)
    head, suffix = rng.choice(words.NAME_HEADS), rng.choice(sector.suffixes)
    revenue = _round_m(10 ** rng.uniform(2.5, 4.8))
    shares = max(5, round(revenue / rng.uniform(10, 60)))  # revenue per share 10-60 keeps EPS plausible
    eps = max(0.05, round(revenue * rng.uniform(*sector.margin) / shares, 2))
    return _Company(
        name=f"{head} {suffix} {rng.choice(words.LEGAL_FORMS)}",
        short=f"{head} {suffix}",
        ticker=(head[:3] + suffix[0]).upper(),
        sector=sector,
        exchange=rng.choice(words.EXCHANGES),
        city=rng.choice(words.CITIES),
        ceo=_person(rng),
        cfo=_person(rng),
        employees=max(100, int(round(revenue * rng.uniform(1.5, 6.0), -2))),
        shares_m=float(shares),
        revenue_m=revenue,
        eps=eps,
        price=round(eps * rng.uniform(10, 35), 2),
    )


def _broker(rng: random.Random) -> str:
    return f"{rng.choice(words.BROKER_HEADS)} {rng.choice(words.BROKER_TAILS)}"


def _about(rng: random.Random, co: _Company) -> str:
    return _say(
        rng,
        words.ABOUT,
        name=co.name,
        short=co.short,
        sector=co.sector.name,
        a_sector=_a(co.sector.name),
        city=co.city,
        emp=co.employees,
        rev=_money(co.revenue_m),
        ex=co.exchange,
        ticker=co.ticker,
    )


def _forward_looking(rng: random.Random, co: _Company) -> str:
    return _say(rng, words.FORWARD_LOOKING, short=co.short)


# ---------------------------------------------------------------------------------------------------------
# Document builders. Each returns (headline, core paragraphs, optional paragraphs); ``_assemble`` adds the
# optional ones until the drawn length target is reached, which varies length without breaking structure.
# ---------------------------------------------------------------------------------------------------------

_Doc = tuple[str, list[str], list[str]]


def _quarterly_earnings(rng: random.Random) -> _Doc:
    co = _company(rng)
    q, year = rng.randint(1, 4), rng.randint(2015, 2025)
    prev = _round_m(co.revenue_m / 4 * rng.uniform(0.85, 1.05))
    cur = _round_m(prev * (1 + _growth(rng, -0.15, 0.3)))
    g = _change(prev, cur)
    ni = _round_m(cur * rng.uniform(*co.sector.margin))
    eps = round(ni / co.shares_m, 2)
    prior_eps = round(eps / rng.uniform(0.75, 1.35), 2)
    est = round(eps * rng.uniform(0.9, 1.1), 2)
    op = _round_m(cur * rng.uniform(1.2, 1.6) * ni / cur)
    op_prev_margin = round(op / cur * 100 - rng.uniform(-3, 3), 1)
    qn = f"{words.ORDINALS[q - 1]} quarter"
    head = _say(
        rng,
        words.EARNINGS_HEAD,
        short=co.short,
        ticker=co.ticker,
        qn=qn,
        year=year,
        qshort=f"Q{q}",
        mv=_move(rng, g),
        rev=_money(cur),
        verdict="beats" if eps > est else "misses" if eps < est else "matches",
    )
    p1 = [
        _say(
            rng,
            words.EARNINGS_REPORTED,
            name=co.name,
            ex=co.exchange,
            ticker=co.ticker,
            qn=qn,
            year=year,
            day=rng.choice(words.WEEKDAYS),
        ),
        _say(rng, words.EARNINGS_REVENUE, mv=_move(rng, g), cur=_money(cur), prev=_money(prev)),
        _say(rng, words.EARNINGS_NET_INCOME, ni=_money(ni), eps=_usd(eps), peps=_usd(prior_eps)),
    ]
    if eps != est:
        p1.append(
            _say(
                rng,
                words.EARNINGS_CONSENSUS,
                firm=rng.choice(words.DATA_FIRMS),
                est=_usd(est),
                bm="beat" if eps > est else "missed",
            )
        )
    drivers = co.sector.up if g > 0 else co.sector.down
    d1, d2 = rng.sample(drivers, 2)
    seg = rng.sample(co.sector.segments, 2)
    share = rng.randint(35, 75)
    seg_a = _round_m(cur * share / 100)
    p2 = [
        _say(
            rng,
            words.EARNINGS_DRIVERS_UP if g > 0 else words.EARNINGS_DRIVERS_DOWN,
            dir="increase" if g > 0 else "decline",
            d1=d1,
            d2=d2,
        ),
        _say(rng, words.EARNINGS_SEGMENTS, a=seg[0], b=seg[1], sa=_money(seg_a), sb=_money(cur - seg_a), share=share),
        _say(rng, words.EARNINGS_OPERATING_MARGIN, op=_money(op), m=_pct(op / cur * 100), pm=_pct(op_prev_margin)),
    ]
    quote = _say(
        rng, words.EARNINGS_CEO_QUOTE, a=seg[0], ceo=co.ceo, d=rng.choice(co.sector.down), qn_cap=qn.capitalize()
    )
    lo = _round_m(cur * 4 * rng.uniform(1.0, 1.08))
    hi = _round_m(lo * rng.uniform(1.02, 1.06))
    extra = [
        quote + " " + _say(rng, words.EARNINGS_CFO, cfo=co.cfo),
        _say(rng, words.EARNINGS_GUIDANCE, ny=year + 1, short=co.short, lo=_money(lo), hi=_money(hi))
        + " "
        + _say(rng, words.EARNINGS_AFTER_HOURS, mv=_move(rng, round(_growth(rng, -0.09, 0.09, 0.002) * 100, 1))),
        _about(rng, co),
        _forward_looking(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _annual_results(rng: random.Random) -> _Doc:
    co = _company(rng)
    year = rng.randint(2015, 2025)
    cur = co.revenue_m  # the "About" paragraph quotes the same annual revenue
    prev = _round_m(cur / (1 + _growth(rng, -0.1, 0.25)))
    ni = _round_m(cur * rng.uniform(*co.sector.margin))
    prev_ni = _round_m(ni / (1 + _growth(rng, -0.3, 0.4)))
    eps = round(ni / co.shares_m, 2)
    payout = rng.randint(20, 60)
    dps = round(eps * payout / 100, 2)
    fcf = _round_m(ni * rng.uniform(0.7, 1.3))
    capex = _round_m(cur * rng.uniform(0.03, 0.12))
    head = _say(rng, words.ANNUAL_HEAD, short=co.short, year=year, rev=_money(cur))
    p1 = [
        _say(
            rng,
            words.ANNUAL_REVENUE,
            name=co.name,
            year=year,
            py=year - 1,
            cur=_money(cur),
            prev=_money(prev),
            mv=_move(rng, _change(prev, cur)),
            ud=_updown(_change(prev, cur)),
        ),
        _say(
            rng,
            words.ANNUAL_NET_INCOME,
            mv=_move(rng, _change(prev_ni, ni)),
            ni=_money(ni),
            pni=_money(prev_ni),
            eps=_usd(eps),
        ),
        _say(rng, words.ANNUAL_FREE_CASH_FLOW, fcf=_money(fcf), capex=_money(capex)),
    ]
    p2 = [
        _say(rng, words.ANNUAL_DIVIDEND, dps=_usd(dps), payout=payout),
        _say(rng, words.ANNUAL_CEO, ceo=co.ceo, year=year, short=co.short, word=rng.choice(words.ANNUAL_YEAR_THEMES)),
    ]
    extra = [
        _say(
            rng,
            words.ANNUAL_SEGMENT,
            a=rng.choice(co.sector.segments),
            b=rng.choice(co.sector.segments),
            d=rng.choice(co.sector.up),
        ),
        _about(rng, co),
        _forward_looking(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _guidance_update(rng: random.Random) -> _Doc:
    co = _company(rng)
    year = rng.randint(2015, 2025)
    raise_ = rng.random() < 0.45
    old_lo = _round_m(co.revenue_m * rng.uniform(0.95, 1.1))
    old_hi = _round_m(old_lo * rng.uniform(1.02, 1.06))
    f = rng.uniform(1.02, 1.08) if raise_ else rng.uniform(0.85, 0.97)
    new_lo, new_hi = _round_m(old_lo * f), _round_m(old_hi * f)
    mid_old, mid_new = (old_lo + old_hi) / 2, (new_lo + new_hi) / 2
    move = _change(co.price, round(co.price * (1 + (rng.uniform(2, 9) if raise_ else -rng.uniform(4, 20)) / 100), 2))
    new_price = round(co.price * (1 + move / 100), 2)
    head = _say(rng, words.GUIDANCE_HEAD, short=co.short, year=year, v="raises" if raise_ else "cuts")
    p1 = [
        _say(
            rng,
            words.GUIDANCE_RANGE,
            name=co.name,
            year=year,
            v="raised" if raise_ else "lowered",
            nl=_money(new_lo),
            nh=_money(new_hi),
            ol=_money(old_lo),
            oh=_money(old_hi),
            cmp="above" if raise_ else "below",
        ),
        _say(rng, words.GUIDANCE_MIDPOINT, c=_pct(abs(_change(mid_old, mid_new))), dir="higher" if raise_ else "lower"),
        _say(rng, words.GUIDANCE_REASON, short=co.short, d=rng.choice(co.sector.up if raise_ else co.sector.down)),
    ]
    p2 = [
        _say(
            rng,
            words.GUIDANCE_SHARES,
            mv=_move(rng, move),
            p=_usd(new_price),
            session=rng.choice(words.GUIDANCE_SESSIONS),
        ),
        _say(
            rng,
            words.GUIDANCE_CFO_QUOTE,
            cfo=co.cfo,
            q=words.GUIDANCE_RAISE_QUOTE if raise_ else words.GUIDANCE_CUT_QUOTE,
        ),
    ]
    extra = [
        _say(
            rng,
            words.GUIDANCE_ANALYST,
            b=_broker(rng),
            a=_person(rng),
            w="upgrade" if raise_ else "cut",
            e=rng.choice(words.GUIDANCE_REACTIONS),
        ),
        _about(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _central_bank(rng: random.Random) -> _Doc:
    country, bank, committee, rate_name, _cur = rng.choice(words.ECONOMIES)
    year = rng.randint(2015, 2025)
    old = rng.randint(1, 24) * 0.25
    bp = rng.choice((-50, -25, 0, 0, 25, 25, 50, 75))
    bp = max(bp, -int(old * 100) + 25)
    new = old + bp / 100
    members = rng.choice((7, 9, 12))
    dissent = rng.choice((0, 0, 1, 2))
    infl = round(rng.uniform(0.5, 7.5), 1)
    target = 2.0
    growth_old = round(rng.uniform(-0.5, 3.5), 1)
    growth_new = round(growth_old + rng.choice((-0.4, -0.2, -0.1, 0.1, 0.2, 0.3)), 1)
    month = rng.choice(words.MONTHS)
    action = "raised" if bp > 0 else "cut" if bp < 0 else "held"
    bank_cap = bank[0].upper() + bank[1:]
    if bp:
        head = _say(
            rng,
            words.CB_HEAD_MOVE,
            b=bank_cap,
            a=action,
            rate=rate_name,
            n=abs(bp),
            new=new,
            c=country,
            a2="raises" if bp > 0 else "cuts",
        )
    else:
        head = _say(rng, words.CB_HEAD_HOLD, b=bank_cap, rate=rate_name, new=new, c=country)
    if bp:
        s1 = _say(
            rng,
            words.CB_MOVE,
            bank_cap=bank_cap,
            bank=bank,
            a=action,
            rate=rate_name,
            n=abs(bp),
            new=new,
            old=old,
            month=month,
            year=year,
            committee=committee,
        )
    else:
        s1 = _say(
            rng,
            words.CB_HOLD,
            bank_cap=bank_cap,
            bank=bank,
            rate=rate_name,
            new=new,
            month=month,
            year=year,
            committee=committee,
        )
    vote = (
        (words.CB_VOTE_SPLIT_MOVE if bp else words.CB_VOTE_SPLIT_HOLD).format(
            committee=committee, yes=members - dissent, no=dissent
        )
        if dissent
        else words.CB_VOTE_UNANIMOUS
    )
    gap = round(infl - target, 1)
    p1 = [s1, vote]
    p2 = [
        _say(
            rng,
            words.CB_INFLATION,
            i=infl,
            t=target,
            g=f"{abs(gap)} percentage points above"
            if gap > 0
            else f"{abs(gap)} percentage points below"
            if gap < 0
            else "exactly at",
        ),
        _say(rng, words.CB_STATEMENT, s=rng.choice(words.CB_OBSERVATIONS)),
        _say(
            rng,
            words.CB_GROWTH_FORECAST,
            n=growth_new,
            o=growth_old,
            year=year,
            r="revised up" if growth_new > growth_old else "revised down",
        ),
    ]
    extra = [
        _say(
            rng,
            words.CB_GOVERNOR,
            gov=_person(rng),
            committee=committee,
            w=rng.choice(words.CB_NEXT_STEPS),
            w2=rng.choice(words.CB_READY_TO),
        ),
        _say(rng, words.CB_BALANCE_SHEET, n=rng.choice((5, 10, 15, 20, 30)), cur=_cur),
        _say(
            rng,
            words.CB_MARKET_REACTION,
            mv=("rose " if bp >= 0 else "fell ") + str(rng.randint(1, 15)),
            y=new + rng.uniform(-0.3, 0.4),
            cur=_cur,
            fx=rng.choice(words.CB_FX_MOVES),
            how=rng.choice(words.CB_REACTION_MOODS),
        ),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _rating_action(rng: random.Random) -> _Doc:
    co = _company(rng)
    agency = rng.choice(words.RATING_AGENCIES)
    kind = rng.choice(words.RATING_KINDS)
    old = rng.randint(2, 16)
    notches = rng.choice((1, 1, 2))
    new = old - notches if kind == "upgrade" else old + notches if kind == "downgrade" else old
    ebitda = _round_m(co.revenue_m * rng.uniform(0.12, 0.3))
    lev_old = round(rng.uniform(1.2, 6.5), 1)
    lev_new = round(
        lev_old
        + (
            -rng.uniform(0.3, 1.2)
            if kind == "upgrade"
            else rng.uniform(0.3, 1.5)
            if kind == "downgrade"
            else rng.uniform(-0.2, 0.2)
        ),
        1,
    )
    lev_new = max(lev_new, 0.5)
    debt = _round_m(ebitda * lev_new)
    outlook = rng.choice(words.RATING_OUTLOOKS[kind])
    year = rng.randint(2015, 2025)
    verb = {"upgrade": "upgraded", "downgrade": "downgraded", "affirm": "affirmed"}[kind]
    head = _say(
        rng,
        words.RATING_HEAD,
        agency=agency,
        short=co.short,
        new=words.RATING_SCALE[new],
        v=verb[:-1] + "s",
        prep="at" if kind == "affirm" else "to",
        v2={"upgrade": "raised", "downgrade": "lowered", "affirm": "affirmed"}[kind],
    )
    if kind == "affirm":
        s1 = _say(rng, words.RATING_AFFIRM, agency=agency, r=words.RATING_SCALE[old], name=co.name, o=outlook)
    else:
        s1 = _say(
            rng,
            words.RATING_CHANGE,
            agency=agency,
            v=verb,
            name=co.name,
            n="one notch" if notches == 1 else "two notches",
            new=words.RATING_SCALE[new],
            old=words.RATING_SCALE[old],
            o=outlook,
            day=rng.choice(words.WEEKDAYS),
        )
    p1 = [s1]
    if kind == "downgrade" and old <= _LAST_IG < new:
        p1.append(words.RATING_FALLEN_ANGEL)
    if kind == "upgrade" and new <= _LAST_IG < old:
        p1.append(words.RATING_BACK_TO_INVESTMENT_GRADE)
    p2 = [
        _say(
            rng,
            words.RATING_LEVERAGE,
            m="improved" if lev_new < lev_old else "rose",
            n=lev_new,
            o=lev_old,
            debt=_money(debt),
            e=_money(ebitda),
        ),
        _say(
            rng,
            words.RATING_REASON,
            agency=agency,
            d=rng.choice(
                co.sector.up
                if kind == "upgrade"
                else co.sector.down
                if kind == "downgrade"
                else co.sector.up + co.sector.down
            ),
        ),
    ]
    trig = round(lev_new + rng.uniform(0.5, 1.5), 1)
    extra = [
        _say(rng, words.RATING_TRIGGERS, t=trig, u=max(0.5, round(lev_new - 1.0, 1)), y=year + 1),
        _say(rng, words.RATING_DEBT_AFFECTED, d=_money(debt * 0.8)),
        _about(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _spread_for(rating_idx: int, rng: random.Random) -> int:
    """Credit spread over Treasuries in bp, rising with worse ratings so the relation is learnable."""
    return int(round((35 + 8 * rating_idx + 1.8 * rating_idx**2) * rng.uniform(0.85, 1.15)))


def _bond_issue(rng: random.Random) -> _Doc:
    co = _company(rng)
    year = rng.randint(2015, 2025)
    r = rng.randint(0, 15)
    tenor = rng.choice((3, 5, 7, 10, 30))
    ust = round(rng.uniform(0.4, 4.8), 3)
    spread = _spread_for(r, rng)
    yld = ust + spread / 100
    size = rng.choice((300, 400, 500, 600, 750, 1000, 1250, 1500, 2000, 3000))
    cover = round(rng.uniform(1.5, 5.0), 1)
    ipt = spread + rng.choice((15, 20, 25, 30))
    head = _say(rng, words.BOND_HEAD, short=co.short, size=_money(size), t=tenor, s=spread)
    p1 = [
        _say(
            rng,
            words.BOND_SOLD,
            name=co.name,
            r=words.RATING_SCALE[r],
            size=_money(size),
            m=year + tenor,
            t=tenor,
            day=rng.choice(words.WEEKDAYS),
        ),
        _say(rng, words.BOND_COUPON, c=yld, s=spread, t=tenor, u=ust),
        _say(rng, words.BOND_PRICE_TALK, ipt=ipt, d=ipt - spread),
    ]
    p2 = [
        _say(rng, words.BOND_ORDER_BOOK, book=_money(size * cover), c=cover),
        _say(rng, words.BOND_PROCEEDS, short=co.short, u=rng.choice(words.BOND_USES)),
    ]
    extra = [
        _say(rng, words.BOND_BOOKRUNNERS, b1=_broker(rng), b2=_broker(rng)),
        _say(rng, words.BOND_INTEREST, i=_money(size * yld / 100)),
        _about(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _loan_market(rng: random.Random) -> _Doc:
    co = _company(rng)
    size = rng.choice((350, 500, 650, 800, 1000, 1200, 1500, 2000, 2500))
    old_m = rng.choice((300, 325, 350, 375, 400, 425, 450, 475, 500))
    cut = rng.choice((25, 50, 50, 75))
    new_m = old_m - cut
    oid = rng.choice((99.0, 99.25, 99.5, 99.75, 100.0))
    lev = round(rng.uniform(3.5, 6.5), 1)
    year = rng.randint(2015, 2025)
    ref = "SOFR" if year >= 2022 else "LIBOR"
    head = _say(rng, words.LOAN_HEAD, short=co.short, size=_money(size), ref=ref, n=new_m, cut=cut)
    p1 = [
        _say(
            rng,
            words.LOAN_REPRICED,
            name=co.name,
            name_s=_poss(co.name),
            size=_money(size),
            ref=ref,
            n=new_m,
            o=old_m,
            cut=cut,
        ),
        _say(rng, words.LOAN_SAVINGS, cut=cut, size=_money(size), s=_money(size * cut / 10000)),
        _say(rng, words.LOAN_DISCOUNT, oid=f"{oid:g}", disc=f"{100 - oid:g}", f=rng.choice(words.LOAN_FLOORS), ref=ref),
    ]
    p2 = [
        _say(rng, words.LOAN_LEVERAGE, l=lev, m=year + rng.randint(5, 7)),
        _say(rng, words.LOAN_ARRANGER, b=_broker(rng)),
        _say(rng, words.LOAN_DEMAND, w=rng.choice(words.LOAN_REPRICING_REASONS), w2=rng.choice(words.LOAN_BUYERS)),
    ]
    extra = [_about(rng, co)]
    return head, [" ".join(p1), " ".join(p2)], extra


def _analyst_note(rng: random.Random) -> _Doc:
    co = _company(rng)
    broker, analyst = _broker(rng), _person(rng)
    year = rng.randint(2015, 2025)
    view = rng.choice(words.ANALYST_VIEWS)
    rating = rng.choice(words.ANALYST_RATINGS[view])
    e1 = round(co.eps * rng.uniform(1.0, 1.15), 2)
    e2 = round(e1 * rng.uniform(1.03, 1.2), 2)
    base_pe = co.price / e2
    pe = round(
        base_pe
        * {"positive": rng.uniform(1.1, 1.4), "neutral": rng.uniform(0.95, 1.08), "negative": rng.uniform(0.65, 0.9)}[
            view
        ],
        1,
    )
    pt = round(pe * e2)
    up = _change(co.price, pt)
    action = rng.choice(words.ANALYST_ACTIONS)
    head = _say(
        rng, words.ANALYST_HEAD, broker=broker, a=action.split(" ")[0][:-1] + "s", short=co.short, r=rating, pt=_usd(pt)
    )
    p1 = [
        _say(
            rng,
            words.ANALYST_COVERAGE,
            broker=broker,
            action=action,
            name=co.name,
            ticker=co.ticker,
            r=_a(rating),
            pt=_usd(pt),
            an=analyst,
            short=co.short,
        ),
        _say(rng, words.ANALYST_UPSIDE, u=_pct(abs(up)), d="upside" if up >= 0 else "downside", p=_usd(co.price)),
        _say(rng, words.ANALYST_VALUATION, pe=pe, y=year + 1, e2=_usd(e2), broker=broker),
    ]
    p2 = [
        _say(
            rng,
            words.ANALYST_FORECAST,
            e1=_usd(e1),
            e2=_usd(e2),
            y0=year,
            y1=year + 1,
            g=_pct(_change(e1, e2)),
            broker=broker,
        ),
        _say(
            rng,
            words.ANALYST_DRIVER,
            d=rng.choice(co.sector.up if view != "negative" else co.sector.down),
            broker=broker,
            w="catalyst" if view != "negative" else "risk",
        ),
    ]
    extra = [
        _say(rng, words.ANALYST_RISKS, r=rng.choice(co.sector.down if view != "negative" else co.sector.up)),
        _say(
            rng,
            words.ANALYST_CONSENSUS,
            n=(n := rng.randint(8, 30)),
            b=rng.randint(2, n),
            firm=rng.choice(words.DATA_FIRMS),
        ),
        _about(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _risk_disclosure(rng: random.Random) -> _Doc:
    co = _company(rng)
    year = rng.randint(2015, 2025)
    debt = _round_m(co.revenue_m * rng.uniform(0.2, 0.9))
    var_pct = rng.randint(10, 60)
    var_debt = _round_m(debt * var_pct / 100)
    fx_pct = rng.randint(10, 60)
    top = rng.randint(5, 25)
    head = _say(rng, words.RISK_HEAD, name=co.name, short=co.short, year=year)
    r1, r2 = co.sector.risks
    p1 = [
        _say(rng, words.RISK_FIRST, r1=r1),
        _say(rng, words.RISK_SECOND, r2=r2),
        _say(rng, words.RISK_CUSTOMERS, t=top, t2=min(95, top * 3), y=year),
    ]
    p2 = [
        _say(rng, words.RISK_VARIABLE_DEBT, y=year, d=_money(debt), v=_money(var_debt), p=var_pct),
        _say(rng, words.RISK_RATE_SENSITIVITY, i=_money(var_debt / 100)),
        _say(rng, words.RISK_CURRENCY, f=fx_pct, x=_money(co.revenue_m * fx_pct / 1000)),
    ]
    extra = [
        _say(rng, words.RISK_REFINANCING, m=_money(debt * rng.uniform(0.1, 0.4)), y=year + rng.randint(1, 4)),
        words.RISK_OTHER,
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _dividend_buyback(rng: random.Random) -> _Doc:
    co = _company(rng)
    year = rng.randint(2015, 2025)
    old = max(0.05, round(co.eps / 4 * rng.uniform(0.2, 0.6), 2))
    new = round(old * rng.uniform(1.02, 1.15), 2)
    if new == old:
        new = round(old + 0.01, 2)
    mcap = _round_m(co.shares_m * co.price)
    bb = _round_m(mcap * rng.uniform(0.02, 0.1))
    head = _say(rng, words.DIVIDEND_HEAD, short=co.short, d=_usd(new), g=_pct(_change(old, new)), bb=_money(bb))
    pay_m = rng.randint(0, 10)
    p1 = [
        _say(rng, words.DIVIDEND_DECLARED, name=co.name, n=_usd(new), o=_usd(old), g=_pct(_change(old, new))),
        _say(
            rng,
            words.DIVIDEND_DATES,
            m=words.MONTHS[pay_m + 1],
            d=rng.randint(1, 28),
            y=year,
            m0=words.MONTHS[pay_m],
            d0=rng.randint(1, 28),
        ),
        _say(rng, words.DIVIDEND_YIELD, a=_usd(new * 4), y=_pct(new * 4 / co.price * 100, 2), p=_usd(co.price)),
    ]
    p2 = [
        _say(rng, words.DIVIDEND_BUYBACK, bb=_money(bb), p=_pct(bb / mcap * 100), mc=_money(mcap), short=co.short),
        _say(rng, words.DIVIDEND_QUOTE, cfo=co.cfo, ceo=co.ceo),
    ]
    extra = [_about(rng, co), _forward_looking(rng, co)]
    return head, [" ".join(p1), " ".join(p2)], extra


def _merger(rng: random.Random) -> _Doc:
    acq = _company(rng)
    tgt = _company(rng, acq.sector)
    if tgt.short == acq.short:
        tgt = _company(rng, acq.sector)
    prem = rng.randint(15, 55)
    offer = round(tgt.price * (1 + prem / 100), 2)
    prem = _change(tgt.price, offer)
    eq = _round_m(offer * tgt.shares_m)
    net_debt = _round_m(tgt.revenue_m * rng.uniform(0.0, 0.6))
    ev = _round_m(eq + net_debt)
    ebitda = _round_m(tgt.revenue_m * rng.uniform(0.1, 0.3))
    syn = _round_m(tgt.revenue_m * rng.uniform(0.02, 0.06))
    year = rng.randint(2015, 2025)
    cash_pct = rng.choice((100, 100, 70, 50))
    head = _say(rng, words.MERGER_HEAD, a=acq.short, t=tgt.short, ev=_money(ev))
    consideration = "in cash" if cash_pct == 100 else f"in cash and stock ({cash_pct}% cash)"
    p1 = [
        _say(
            rng,
            words.MERGER_AGREED,
            a=acq.name,
            t=tgt.name,
            o=_usd(offer),
            c=consideration,
            eq=_money(eq),
            day=rng.choice(words.WEEKDAYS),
        ),
        _say(rng, words.MERGER_PREMIUM, p=_pct(prem), t_s=_poss(tgt.short), c=_usd(tgt.price)),
        _say(
            rng,
            words.MERGER_VALUATION,
            nd=_money(net_debt),
            ev=_money(ev),
            m=ev / ebitda,
            e=_money(ebitda),
            t=tgt.short,
            t_s=_poss(tgt.short),
        ),
    ]
    p2 = [
        _say(rng, words.MERGER_SYNERGIES, a=acq.short, s=_money(syn), y=year + 2),
        _say(rng, words.MERGER_CLOSING, h=rng.choice(words.MERGER_HALVES), y=year + 1),
        _say(rng, words.MERGER_ADVISERS, b1=_broker(rng), b2=_broker(rng), a=acq.short, t=tgt.short),
    ]
    extra = [
        _say(rng, words.MERGER_QUOTE, t=tgt.short, seg=rng.choice(acq.sector.segments), ceo=acq.ceo, a=acq.short),
        _about(rng, acq),
        _forward_looking(rng, acq),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _equity_wrap(rng: random.Random) -> _Doc:
    idx = rng.sample(words.INDEXES, 2)
    day = rng.choice(words.WEEKDAYS)
    lv = [round(rng.uniform(1500, 40000), 2) for _ in idx]
    ch = [round(_growth(rng, -2.5, 2.5, 0.05), 2) for _ in idx]
    new = [round(a * (1 + c / 100), 2) for a, c in zip(lv, ch, strict=True)]
    best, worst = rng.sample(words.SECTORS, 2)
    co = _company(rng)
    mover = round(_growth(rng, -18, 18, 3), 1)
    y10 = round(rng.uniform(0.6, 5.0), 2)
    dy = rng.randint(-12, 12)

    def idx_line(i: int) -> str:
        pts = round(new[i] - lv[i], 2)
        d = "up" if pts > 0 else "down" if pts < 0 else "unchanged"
        return words.WRAP_INDEX_LINE.format(index=idx[i], d=d, c=abs(ch[i]), level=new[i], pts=abs(pts))

    head = _say(
        rng,
        words.WRAP_HEAD,
        d="rise" if ch[0] > 0 else "fall",
        day=day,
        s=best.name,
        i=idx[0],
        d2="up" if ch[0] > 0 else "down",
        c=abs(ch[0]),
    )
    p1 = [
        _say(rng, words.WRAP_OPEN, m="advanced" if ch[0] > 0 else "declined", day=day, l1=_cap(idx_line(0))),
        _cap(idx_line(1)) + ".",
        _say(rng, words.WRAP_SECTORS, b=_cap(best.name), b2=best.name, w=worst.name),
    ]
    p2 = [
        _say(
            rng,
            words.WRAP_MOVER,
            name=co.short,
            mv=_move(rng, mover),
            r=rng.choice(words.WRAP_REASONS_UP if mover > 0 else words.WRAP_REASONS_DOWN),
        ),
        _say(
            rng,
            words.WRAP_TREASURY,
            m=f"{'rose' if dy > 0 else 'fell'} {abs(dy)} basis points" if dy else "was little changed",
            y=y10,
        ),
    ]
    extra = [
        _say(rng, words.WRAP_FOCUS, f=rng.choice(words.WRAP_FOCUS_TOPICS)),
        _say(rng, words.WRAP_VOLUME, v=rng.uniform(8, 16), c=rng.choice(words.WRAP_VOLUME_LEVELS)),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _economic_data(rng: random.Random) -> _Doc:
    country = rng.choice(words.ECONOMIES)[0]
    year = rng.randint(2015, 2025)
    mi = rng.randint(0, 11)
    month = words.MONTHS[mi]
    prev_cpi = round(rng.uniform(0.5, 8.0), 1)
    cpi = round(prev_cpi + rng.uniform(-0.6, 0.6), 1)
    fc = round(cpi + rng.choice((-0.2, -0.1, 0.0, 0.1, 0.2)), 1)
    core = round(cpi + rng.uniform(-1.0, 1.0), 1)
    jobs = rng.randint(-80, 450)
    jobs_fc = jobs + rng.randint(-60, 60)
    ur = round(rng.uniform(3.2, 7.5), 1)
    ur_prev = round(ur + rng.choice((-0.2, -0.1, 0.0, 0.1, 0.2)), 1)
    head = _say(
        rng,
        words.ECON_HEAD,
        c=country,
        v="rises to" if cpi > prev_cpi else "eases to" if cpi < prev_cpi else "holds at",
        i=cpi,
        m=month,
        j=jobs,
    )
    cmp_fc = "above" if cpi > fc else "below" if cpi < fc else "in line with"
    p1 = [
        _say(rng, words.ECON_CPI, c=country, i=cpi, m=month, p=prev_cpi, pm=words.MONTHS[mi - 1], y=year),
        _say(rng, words.ECON_FORECAST, f=fc, cmp=cmp_fc),
        _say(rng, words.ECON_CORE, k=core),
    ]
    p2 = [
        _say(
            rng,
            words.ECON_PAYROLLS,
            v="added" if jobs >= 0 else "cut",
            v2="rose" if jobs >= 0 else "fell",
            j=abs(jobs * 1000),
            m=month,
            cmp="more than" if jobs > jobs_fc else "fewer than" if jobs < jobs_fc else "matching",
            f=jobs_fc * 1000,
        ),
        _say(
            rng,
            words.ECON_UNEMPLOYMENT,
            u=ur,
            p=ur_prev,
            v="rose to" if ur > ur_prev else "fell to" if ur < ur_prev else "held at",
        ),
    ]
    extra = [
        _say(
            rng,
            words.ECON_ECONOMISTS,
            b=_broker(rng),
            w=rng.choice(words.ECON_EFFECTS),
            a=rng.choice(words.ECON_POLICY_CASES),
            a2=rng.choice(words.ECON_POLICY_ACTIONS),
        ),
        _say(rng, words.ECON_WAGES, w=round(rng.uniform(1.5, 6.0), 1)),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _treasury_auction(rng: random.Random) -> _Doc:
    country = rng.choice(words.ECONOMIES)[0]
    tenor = rng.choice((2, 3, 5, 7, 10, 20, 30))
    size = rng.choice((16, 22, 25, 35, 42, 44, 58, 69))
    hy = round(rng.uniform(0.3, 5.2), 3)
    tail = rng.uniform(-2.0, 3.0)
    wi = round(hy - tail / 100, 3)
    tail_bp = round((hy - wi) * 100, 1)
    btc = round(rng.uniform(2.0, 2.9), 2)
    avg = round(btc + rng.uniform(-0.25, 0.25), 2)
    ind, dire = rng.randint(55, 75), rng.randint(10, 22)
    head = _say(
        rng,
        words.AUCTION_HEAD,
        c=country,
        t=tenor,
        b=btc,
        r="tails" if tail_bp > 0 else "stops through" if tail_bp < 0 else "prices on the screws",
    )
    p1 = [
        _say(rng, words.AUCTION_SOLD, c=country, s=_money(size * 1000), t=tenor, hy=hy),
        _say(rng, words.AUCTION_TAIL, a=abs(tail_bp), d="above" if tail_bp > 0 else "below", wi=wi)
        if tail_bp
        else words.AUCTION_AT_WHEN_ISSUED.format(wi=wi),
        _say(rng, words.AUCTION_BID_TO_COVER, b=btc, a=avg),
    ]
    p2 = [
        _say(rng, words.AUCTION_ALLOTMENT, i=ind, d=dire, p=100 - ind - dire),
        _say(rng, words.AUCTION_DEMAND, w="soft" if tail_bp > 0 else "strong" if tail_bp < 0 else "solid"),
    ]
    extra = [_say(rng, words.AUCTION_SUPPLY, n=_money(size * 1000 * 2.5))]
    return head, [" ".join(p1), " ".join(p2)], extra


def _ipo(rng: random.Random) -> _Doc:
    co = _company(rng)
    lo = rng.randint(12, 40)
    hi = lo + rng.choice((2, 3, 4))
    pos = rng.choice(words.IPO_PLACES)
    price = {"above": hi + 1, "top": hi, "middle": (lo + hi) / 2, "bottom": lo}[pos]
    out = max(10, round(co.revenue_m * rng.uniform(0.5, 4.0) / price))  # millions of shares outstanding
    shares = max(2, round(out * rng.uniform(0.08, 0.25)))
    raised = _round_m(shares * price)
    mcap = _round_m(out * price)
    op = round(price * (1 + _growth(rng, -0.2, 0.6)), 2)
    year = rng.randint(2015, 2025)
    where = words.IPO_RANGE_PLACES[pos]
    head = _say(rng, words.IPO_HEAD, short=co.short, p=_usd(price), r=_money(raised), ex=co.exchange)
    p1 = [
        _say(rng, words.IPO_PRICED, name=co.name, s=shares, p=_usd(price), w=where, lo=_usd(lo), hi=_usd(hi)),
        _say(rng, words.IPO_RAISED, r=_money(raised), mc=_money(mcap), o=out),
        _say(
            rng,
            words.IPO_OPENED,
            op=_usd(op),
            ex=co.exchange,
            t=co.ticker,
            ud=_updown(_change(price, op)),
            c=_pct(_change(price, op)),
        ),
    ]
    p2 = [
        _say(
            rng,
            words.IPO_COMPANY,
            short=co.short,
            s=co.sector.name,
            a_s=_a(co.sector.name),
            city=co.city,
            rev=_money(co.revenue_m),
            y=year - 1,
        ),
        _say(rng, words.IPO_UNDERWRITERS, b1=_broker(rng), b2=_broker(rng)),
    ]
    extra = [
        _say(rng, words.IPO_MARKET, n=rng.choice(words.IPO_RANKS), y=year, w=rng.choice(words.IPO_MARKET_STATES)),
        _say(rng, words.IPO_PROCEEDS, u=rng.choice(words.IPO_USES)),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _fund_commentary(rng: random.Random) -> _Doc:
    style = rng.choice(words.FUND_STYLES)
    fund = f"{rng.choice(words.NAME_HEADS)} {style} Fund"
    bench = rng.choice(words.INDEXES)
    q, year = rng.randint(1, 4), rng.randint(2015, 2025)
    bret = round(rng.gauss(1.5, 5.0), 2)
    fret = round(bret + rng.gauss(0, 1.2), 2)
    ex_bp = round((fret - bret) * 100)
    aum = _round_m(10 ** rng.uniform(2.3, 4.3))
    c1, c2 = _company(rng), _company(rng)
    head = _say(rng, words.FUND_HEAD, f=fund, q=q, y=year)
    p1 = [
        _say(rng, words.FUND_RETURN, f=fund, r=fret, o=words.ORDINALS[q - 1], y=year, b=bret, bench=bench, q=q),
        (words.FUND_OUTPERFORMED if ex_bp > 0 else words.FUND_UNDERPERFORMED).format(bp=abs(ex_bp))
        if ex_bp
        else words.FUND_IN_LINE,
        _say(rng, words.FUND_ASSETS, a=_money(aum)),
    ]
    p2 = [
        _say(
            rng,
            words.FUND_CONTRIBUTORS,
            c1=c1.short,
            d1=rng.choice(c1.sector.up),
            c2=c2.short,
            d2=rng.choice(c2.sector.down),
        ),
        _say(rng, words.FUND_POSITIONING, v=rng.choice(words.FUND_POSITION_CHANGES), s=rng.choice(words.SECTORS).name),
    ]
    extra = [
        _say(
            rng,
            words.FUND_OUTLOOK,
            p=_person(rng),
            s=rng.choice(words.SECTORS).name,
            w=rng.choice(words.FUND_VALUATIONS),
            w2=rng.choice(words.FUND_EXPECTATIONS),
        ),
        words.FUND_DISCLAIMER,
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _commodities(rng: random.Random) -> _Doc:
    day = rng.choice(words.WEEKDAYS)
    picks = rng.sample(words.COMMODITIES, 3)
    lines = []
    for name, unit, lo, hi in picks:
        prev = round(rng.uniform(lo, hi), 2)
        c = round(_growth(rng, -4.0, 4.0, 0.1), 1)
        new = round(prev * (1 + c / 100), 2)
        lines.append(
            _say(rng, words.COMMOD_PRICE, n=name, mv=_move(rng, c), ud=_updown(c), p=_usd(new), u=unit, q=_usd(prev))
        )
    dxy = round(rng.uniform(85, 115), 2)
    dc = round(_growth(rng, -0.9, 0.9, 0.1), 1)
    head = _say(rng, words.COMMOD_HEAD, n=picks[0][0].lower(), d=rng.choice(words.COMMOD_HEAD_WORDS), day=day)
    p1 = [_say(rng, words.COMMOD_OPEN, w=rng.choice(words.COMMOD_MOODS), day=day)] + lines
    p2 = [
        _say(rng, words.COMMOD_DOLLAR, mv=_move(rng, dc), v=dxy * (1 + dc / 100)),
        _say(rng, words.COMMOD_REASON, b=_broker(rng), r=rng.choice(words.COMMOD_REASONS)),
    ]
    extra = [
        _say(
            rng,
            words.COMMOD_FLOWS,
            w=rng.choice(words.COMMOD_INVENTORY_MOVES),
            n=round(rng.uniform(0.5, 6), 1),
            w2=rng.choice(words.COMMOD_POSITION_MOVES),
            o=rng.choice(words.COMMOD_WEEKS),
        )
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _bank_capital(rng: random.Random) -> _Doc:
    co = _company(rng, words.SECTORS[0])
    year = rng.randint(2015, 2025)
    rwa = _round_m(co.revenue_m * rng.uniform(8, 14))
    cet1 = round(rng.uniform(9.5, 15.5), 1)
    cap = _round_m(rwa * cet1 / 100)
    req = round(rng.uniform(7.0, 10.5), 1)
    stress_min = round(cet1 - rng.uniform(1.0, 4.5), 1)
    loans = _round_m(rwa * rng.uniform(0.7, 1.1))
    deposits = _round_m(loans / rng.uniform(0.65, 1.0))
    nim = round(rng.uniform(1.8, 3.8), 2)
    head = _say(rng, words.CAPITAL_HEAD, short=co.short, c=cet1, q=rng.randint(1, 4), m=stress_min)
    p1 = [
        _say(rng, words.CAPITAL_CET1, name=co.name, c=cet1, y=year, cap=_money(cap), rwa=_money(rwa)),
        _say(rng, words.CAPITAL_BUFFER, b=round((cet1 - req) * 100), r=req),
    ]
    p2 = [
        _say(rng, words.CAPITAL_STRESS, m=stress_min, d=round((cet1 - stress_min) * 100)),
        _say(rng, words.CAPITAL_LOANS, l=_money(loans), d=_money(deposits), r=_pct(loans / deposits * 100)),
        _say(rng, words.CAPITAL_NIM, n=nim),
    ]
    extra = [_say(rng, words.CAPITAL_PLAN, a=rng.choice(words.CAPITAL_PLANS)), _about(rng, co)]
    return head, [" ".join(p1), " ".join(p2)], extra


def _credit_weekly(rng: random.Random) -> _Doc:
    year = rng.randint(2015, 2025)
    hy = rng.randint(280, 800)
    dhy = rng.randint(-45, 45)
    ig = rng.randint(80, 220)
    dig = rng.randint(-12, 12)
    iss = round(rng.uniform(5, 45), 1)
    prior_ytd = round(rng.uniform(50, 900), 1)
    dr = round(rng.uniform(0.8, 6.5), 1)
    head = _say(rng, words.CREDIT_HEAD, w="widen" if dhy > 0 else "tighten", n=rng.randint(2, 51), y=year)

    def mv(d: int) -> str:
        return f"widened {d} basis points" if d > 0 else f"tightened {-d} basis points" if d < 0 else "were flat"

    p1 = [
        _say(rng, words.CREDIT_HIGH_YIELD, m=mv(dhy), n=hy + dhy),
        _say(rng, words.CREDIT_INVESTMENT_GRADE, m=mv(dig), n=ig + dig),
        _say(rng, words.CREDIT_ISSUANCE, i=_money(iss * 1000), y=_money((prior_ytd + iss) * 1000)),
    ]
    p2 = [
        _say(rng, words.CREDIT_DEFAULTS, d=dr, a=rng.choice(words.RATING_AGENCIES)),
        _say(
            rng,
            words.CREDIT_FUNDS,
            k=rng.choice(words.CREDIT_FUND_KINDS),
            f=rng.choice(words.CREDIT_FLOWS),
            n=_money(rng.uniform(150, 4000)),
        ),
    ]
    extra = [
        _say(
            rng,
            words.CREDIT_STRATEGY,
            b=_broker(rng),
            w=rng.choice(words.CREDIT_SPREAD_VIEWS),
            s=rng.choice(words.CREDIT_TRADES),
            r=rng.choice(words.CREDIT_REASONS),
        )
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _restructuring(rng: random.Random) -> _Doc:
    co = _company(rng)
    year = rng.randint(2015, 2025)
    p = rng.randint(3, 15)
    cut = round(co.employees * p / 100)
    charge = _round_m(co.revenue_m * rng.uniform(0.005, 0.03))
    savings = _round_m(charge * rng.uniform(0.8, 2.0))
    head = _say(rng, words.RESTRUCT_HEAD, short=co.short, n=cut, p=p)
    p1 = [
        _say(rng, words.RESTRUCT_CUTS, name=co.name, n=cut, p=p, e=co.employees),
        _say(rng, words.RESTRUCT_CHARGES, c=_money(charge), s=_money(savings), y=year + 1),
    ]
    p2 = [
        _say(rng, words.RESTRUCT_CAUSE, short=co.short, d=rng.choice(co.sector.down)),
        _say(rng, words.RESTRUCT_QUOTE, ceo=co.ceo),
    ]
    extra = [
        _say(rng, words.RESTRUCT_DIVISION, s=rng.choice(co.sector.segments)),
        _about(rng, co),
        _forward_looking(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


# (type tag, builder). A tuple keeps the draw order fixed; tags are stable API for tests and analysis.
_BUILDERS: tuple[tuple[str, Callable[[random.Random], _Doc]], ...] = (
    ("quarterly_earnings", _quarterly_earnings),
    ("annual_results", _annual_results),
    ("guidance_update", _guidance_update),
    ("central_bank", _central_bank),
    ("rating_action", _rating_action),
    ("bond_issue", _bond_issue),
    ("loan_market", _loan_market),
    ("analyst_note", _analyst_note),
    ("risk_disclosure", _risk_disclosure),
    ("dividend_buyback", _dividend_buyback),
    ("merger", _merger),
    ("equity_wrap", _equity_wrap),
    ("economic_data", _economic_data),
    ("treasury_auction", _treasury_auction),
    ("ipo", _ipo),
    ("fund_commentary", _fund_commentary),
    ("commodities", _commodities),
    ("bank_capital", _bank_capital),
    ("credit_weekly", _credit_weekly),
    ("restructuring", _restructuring),
)
DOC_TYPES: tuple[str, ...] = tuple(tag for tag, _ in _BUILDERS)


def _context(rng: random.Random) -> str:
    """Generic market-backdrop paragraph, used only to lift short documents over ``MIN_WORDS``."""
    sector = rng.choice(words.SECTORS)
    return _say(
        rng,
        words.CONTEXT,
        mood=rng.choice(words.CONTEXT_MOODS),
        a=rng.choice(words.CONTEXT_THEMES),
        b=rng.choice(words.CONTEXT_COUNTERWEIGHTS),
        vol=rng.choice(words.CONTEXT_VOLATILITY),
        sector=sector.name,
        a2=rng.choice(sector.up + sector.down),
        b2=rng.choice(words.CONTEXT_FOCUS),
    )


def _n_words(paras: list[str]) -> int:
    return sum(len(p.split()) for p in paras)


def _assemble(rng: random.Random, doc: _Doc) -> str:
    """Headline + core paragraphs, then optional paragraphs up to a drawn target, kept within the word bounds."""
    head, core, extra = doc
    paras = [head, *core]
    target = rng.randint(90, 300)
    for p in extra:
        if _n_words(paras) >= target:
            break
        paras.append(p)
    while _n_words(paras) < MIN_WORDS:
        paras.append(_context(rng))
    while _n_words(paras) > MAX_WORDS and len(paras) > 2:
        paras.pop()
    # A name ending in "Inc." or "Co." at the end of a sentence would otherwise print "Inc..".
    text = "\n\n".join(paras).replace("..", ".")
    if not (MIN_WORDS <= len(text.split()) <= MAX_WORDS and text.isascii()):
        raise AssertionError(f"generator produced an out-of-spec document:\n{text}")
    return text


def generate_typed_documents(n_docs: int, seed: int) -> list[tuple[str, str]]:
    """Return ``n_docs`` ``(type_tag, text)`` pairs; identical for identical ``(n_docs, seed)``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_docs):
        tag, build = rng.choice(_BUILDERS)
        out.append((tag, _assemble(rng, build(rng))))
    return out


def generate_documents(n_docs: int, seed: int) -> list[str]:
    """Return ``n_docs`` synthetic finance documents (80-400 words, ASCII) drawn from ``random.Random(seed)``."""
    return [text for _, text in generate_typed_documents(n_docs, seed)]


# ---------------------------------------------------------------------------------------------------------
# Files on disk.
# ---------------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, docs: list[str]) -> int:
    # Explicit "\n" endings, ASCII-escaped JSON and binary writes keep the bytes identical on every platform.
    data = "".join(json.dumps({"text": d}, ensure_ascii=True) + "\n" for d in docs).encode("ascii")
    path.write_bytes(data)
    return len(data)


def train_sentencepiece(texts: list[str], vocab_size: int) -> bytes:
    """Train a byte-fallback BPE SentencePiece model in memory and return the serialized model.

    Identity normalization and no whitespace folding make encode->decode exact on our text (newlines become
    byte pieces); one thread and no input sampling/shuffling keep the run deterministic.
    """
    import sentencepiece as spm  # local import: generating text must not require sentencepiece

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        max_sentence_length=1 << 16,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        pad_id=0,
        pad_piece="<pad>",
        unk_id=1,
        unk_piece="<unk>",
        bos_id=2,
        bos_piece="<s>",
        eos_id=3,
        eos_piece="</s>",
        minloglevel=2,
    )
    return buf.getvalue()


_SOURCE_MD = """\
# demo_data: synthetic finance corpus

This directory is **generated**, not collected. It contains no third-party text: every document is built by
`tools/demo_corpus/` (generators in `generate.py`, templates and word tables in `words.py`) from hand-written
templates whose slots (company names, tickers, quarters, amounts, ratings, basis points, ...) are filled by
`random.Random(seed)`. All companies, people, brokers, rating agencies, central banks, countries and indexes
are fictional; any resemblance is coincidental.

Numbers within a document are derived from each other (e.g. growth from prior and current revenue, EPS from
net income and share count, bond yield = Treasury yield + spread, interest savings = loan size x basis
points), so a small language model has real structure to learn. There are {n_types} document types
({types}).

- `{train}`: {n_train} training documents (seed {seed}), one JSON object `{{"text": ...}}` per line.
- `{dev}`: {n_dev} dev documents (seed {dev_seed}), same format, disjoint from train.
- `{tok}`: SentencePiece BPE tokenizer trained on the train split: vocab {vocab}, byte fallback, digits
  split, identity normalization (encode/decode is exact); ids pad=0 `<pad>`, unk=1 `<unk>`, bos=2 `<s>`,
  eos=3 `</s>`.

Documents are 80-400 words, ASCII, with a headline and paragraphs separated by blank lines (`\\n\\n`).
The jsonl files depend only on Python's `random.Random`; `tokenizer.model` is deterministic for a given
sentencepiece version (one thread, no input sampling), and was produced with sentencepiece {spm_version}.

Regenerate from the repository root (byte-identical files, `tokenizer.model` with the same sentencepiece
version; `tests/test_demo_corpus.py` runs this command and compares):

```
{cmd}
```
"""


def write_demo_data(
    out_dir: str | Path,
    *,
    n_train: int = DEFAULT_N_TRAIN,
    n_dev: int = DEFAULT_N_DEV,
    vocab_size: int = DEFAULT_VOCAB,
    seed: int = 0,
    train_tokenizer: bool = True,
) -> dict[str, int | float]:
    """Write train/dev jsonl, ``tokenizer.model`` (unless disabled) and ``SOURCE.md`` into ``out_dir``.

    Returns counts: docs, words and bytes per split, plus tokenizer size and training seconds when trained.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = generate_documents(n_train, seed)
    dev = generate_documents(n_dev, seed + DEV_SEED_OFFSET)
    stats: dict[str, int | float] = {
        "train_docs": len(train),
        "dev_docs": len(dev),
        "train_words": sum(len(d.split()) for d in train),
        "dev_words": sum(len(d.split()) for d in dev),
        "train_bytes": _write_jsonl(out / TRAIN_FILE, train),
        "dev_bytes": _write_jsonl(out / DEV_FILE, dev),
    }
    spm_version = "n/a (no tokenizer trained in this run)"
    if train_tokenizer:
        import sentencepiece as spm

        spm_version = spm.__version__
        t0 = time.perf_counter()
        model = train_sentencepiece(train, vocab_size)
        stats["tokenizer_seconds"] = round(time.perf_counter() - t0, 2)
        (out / TOKENIZER_FILE).write_bytes(model)
        stats["tokenizer_bytes"] = len(model)
    (out / "SOURCE.md").write_text(
        _SOURCE_MD.format(
            n_types=len(DOC_TYPES),
            types=", ".join(DOC_TYPES),
            train=TRAIN_FILE,
            dev=DEV_FILE,
            tok=TOKENIZER_FILE,
            n_train=n_train,
            n_dev=n_dev,
            seed=seed,
            dev_seed=seed + DEV_SEED_OFFSET,
            vocab=vocab_size,
            spm_version=spm_version,
            cmd=f"python -m tools.demo_corpus --out {out.name} --n-train {n_train} --n-dev {n_dev} "
            f"--vocab-size {vocab_size} --seed {seed}",
        ),
        encoding="ascii",
    )
    return stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tools.demo_corpus",
        description="Generate the synthetic finance demo corpus and train its SentencePiece tokenizer.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="number of training documents")
    p.add_argument("--n-dev", type=int, default=DEFAULT_N_DEV, help="number of dev documents")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB, help="SentencePiece vocabulary size")
    p.add_argument("--seed", type=int, default=0, help=f"generator seed (dev uses seed + {DEV_SEED_OFFSET})")
    p.add_argument("--no-tokenizer", action="store_true", help="skip tokenizer training")
    a = p.parse_args(argv)
    stats = write_demo_data(
        a.out,
        n_train=a.n_train,
        n_dev=a.n_dev,
        vocab_size=a.vocab_size,
        seed=a.seed,
        train_tokenizer=not a.no_tokenizer,
    )
    print(f"wrote {a.out}")
    for k, v in stats.items():
        print(f"  {k}: {v:,}" if isinstance(v, int) else f"  {k}: {v}")


if __name__ == "__main__":
    main()
