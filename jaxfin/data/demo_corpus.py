"""Synthetic English finance corpus and SentencePiece tokenizer for the jaxfin demo and smoke tests.

The project ships no third-party text: everything in ``demo_data/`` is produced by this module from
templates filled by a seeded ``random.Random``, so it is license-free and reproducible byte for byte.
All companies, people, brokers, rating agencies, central banks, countries and indexes are fictional.

Numbers inside a document are derived from one another (growth from the prior and current figures, EPS
from net income and share count, yields from Treasury yield plus spread, savings from size times basis
points), so a tiny model has real structure to learn beyond surface phrasing. Twenty document types with
several phrasings per sentence keep it from being memorised within a demo run.

Regenerate the shipped data with ``python -m jaxfin.data.demo_corpus --out demo_data``.
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

TRAIN_FILE = "finance_train.jsonl"
DEV_FILE = "finance_dev.jsonl"
TOKENIZER_FILE = "tokenizer.model"
# Dev uses a far-away seed so the two streams never coincide for any sane ``seed``.
DEV_SEED_OFFSET = 1_000_003
MIN_WORDS, MAX_WORDS = 80, 400
# Shipped defaults, sized to keep demo_data/ under ~3 MB.
DEFAULT_N_TRAIN, DEFAULT_N_DEV, DEFAULT_VOCAB = 3000, 150, 1024

# ---------------------------------------------------------------------------------------------------------
# Vocabulary. Tuples (not sets/dicts) so that ``rng.choice`` sees a fixed order on every Python build.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sector:
    name: str
    suffixes: tuple[str, ...]  # words that make a company name sound like it belongs to the sector
    segments: tuple[str, ...]  # business segments, used for revenue breakdowns
    up: tuple[str, ...]  # reasons results improve
    down: tuple[str, ...]  # reasons results deteriorate
    risks: tuple[str, ...]  # risk-factor phrases for disclosures
    margin: tuple[float, float]  # plausible net margin range


_SECTORS = (
    _Sector(
        "banking",
        ("Bancorp", "Financial", "Bank"),
        ("consumer banking", "commercial lending", "wealth management", "capital markets"),
        ("higher net interest income", "stronger loan growth", "lower credit loss provisions", "higher fees"),
        ("higher deposit costs", "a rise in loan loss provisions", "weaker mortgage origination", "lower fees"),
        (
            "changes in interest rates could compress our net interest margin",
            "deterioration in the credit quality of our borrowers could increase our provision for credit losses",
        ),
        (0.15, 0.30),
    ),
    _Sector(
        "insurance",
        ("Insurance", "Assurance", "Mutual"),
        ("property and casualty", "life and annuities", "specialty lines", "reinsurance"),
        ("favorable underwriting results", "higher premium rates", "stronger investment income"),
        ("elevated catastrophe losses", "adverse reserve development", "lower investment income"),
        ("catastrophe losses could exceed our estimates", "our loss reserves may prove inadequate"),
        (0.05, 0.15),
    ),
    _Sector(
        "semiconductors",
        ("Semiconductor", "Micro", "Silicon"),
        ("data center", "automotive", "mobile", "industrial"),
        ("strong data center demand", "higher average selling prices", "new product ramps"),
        ("an inventory correction at customers", "weaker smartphone demand", "lower memory prices"),
        ("we depend on a small number of third-party foundries", "the semiconductor industry is highly cyclical"),
        (0.10, 0.30),
    ),
    _Sector(
        "software",
        ("Software", "Systems", "Cloud"),
        ("subscription", "professional services", "maintenance", "platform"),
        ("growth in subscription revenue", "higher net retention", "new enterprise customers"),
        ("longer sales cycles", "higher customer churn", "weaker spending by small businesses"),
        ("security breaches could harm our reputation", "we may fail to retain existing customers"),
        (0.08, 0.25),
    ),
    _Sector(
        "energy",
        ("Energy", "Petroleum", "Resources"),
        ("upstream", "refining", "midstream", "chemicals"),
        ("higher realized oil prices", "increased production volumes", "stronger refining margins"),
        ("lower realized natural gas prices", "unplanned maintenance at refineries", "weaker refining margins"),
        (
            "volatility in oil and natural gas prices could reduce our cash flows",
            "climate regulation could increase our operating costs",
        ),
        (0.05, 0.18),
    ),
    _Sector(
        "utilities",
        ("Power", "Utilities", "Electric"),
        ("regulated electric", "natural gas distribution", "renewables", "transmission"),
        ("new customer rates", "higher electricity sales", "growth in the regulated rate base"),
        ("milder weather", "higher financing costs", "storm restoration costs"),
        ("regulators may not approve rate increases we request", "severe weather could damage our assets"),
        (0.08, 0.15),
    ),
    _Sector(
        "retail",
        ("Stores", "Retail", "Brands"),
        ("stores", "e-commerce", "wholesale", "international"),
        ("higher comparable store sales", "strong online demand", "fewer markdowns"),
        ("lower store traffic", "higher freight costs", "heavier promotional activity"),
        ("changes in consumer spending could reduce our sales", "we may not manage inventory effectively"),
        (0.02, 0.08),
    ),
    _Sector(
        "pharmaceuticals",
        ("Pharmaceuticals", "Therapeutics", "Biosciences"),
        ("oncology", "immunology", "vaccines", "generics"),
        ("strong sales of its oncology portfolio", "new product launches", "higher prescription volumes"),
        ("generic competition", "lower vaccine sales", "pricing pressure in the United States"),
        ("clinical trials may fail to demonstrate safety or efficacy", "we face patent expirations on key products"),
        (0.10, 0.30),
    ),
    _Sector(
        "industrials",
        ("Industries", "Machinery", "Manufacturing"),
        ("aerospace", "building products", "industrial automation", "power equipment"),
        ("higher pricing", "strong aftermarket demand", "productivity gains"),
        ("supply chain disruptions", "higher raw material costs", "lower volumes in Europe"),
        ("disruptions at our suppliers could delay deliveries", "we may not pass on higher input costs"),
        (0.06, 0.14),
    ),
    _Sector(
        "transportation",
        ("Logistics", "Freight", "Airlines"),
        ("truckload", "intermodal", "air cargo", "passenger"),
        ("higher freight rates", "stronger passenger demand", "lower fuel costs"),
        ("lower shipment volumes", "higher fuel costs", "labor cost inflation"),
        ("fuel price volatility could reduce our margins", "labor disputes could disrupt our operations"),
        (0.03, 0.10),
    ),
    _Sector(
        "real estate",
        ("Properties", "Realty", "Estates"),
        ("office", "industrial", "residential", "retail centers"),
        ("higher occupancy", "rent increases on lease renewals", "contributions from new developments"),
        ("lower office occupancy", "higher interest expense", "tenant bankruptcies"),
        ("rising interest rates could reduce property values", "tenants may fail to renew their leases"),
        (0.10, 0.35),
    ),
    _Sector(
        "telecommunications",
        ("Telecom", "Communications", "Networks"),
        ("wireless", "broadband", "enterprise", "wholesale"),
        ("growth in wireless subscribers", "higher broadband pricing", "fiber expansion"),
        ("subscriber losses", "competitive pricing", "declines in legacy voice services"),
        ("we require significant capital spending to maintain our networks", "spectrum may be costly to acquire"),
        (0.06, 0.16),
    ),
    _Sector(
        "consumer staples",
        ("Foods", "Beverages", "Household"),
        ("snacks", "beverages", "personal care", "home care"),
        ("price increases", "favorable product mix", "volume growth in emerging markets"),
        ("lower volumes", "commodity cost inflation", "unfavorable currency movements"),
        ("commodity price increases could reduce our margins", "retailer consolidation could weaken our pricing power"),
        (0.07, 0.15),
    ),
    _Sector(
        "mining",
        ("Mining", "Metals", "Minerals"),
        ("copper", "gold", "iron ore", "lithium"),
        ("higher copper prices", "record gold production", "lower unit costs"),
        ("lower iron ore prices", "grade declines at key mines", "higher energy costs"),
        ("commodity prices are volatile and outside our control", "we face permitting risk at new mines"),
        (0.08, 0.25),
    ),
    _Sector(
        "autos",
        ("Motors", "Automotive", "Mobility"),
        ("vehicles", "parts", "financial services", "electric vehicles"),
        ("strong truck demand", "higher vehicle pricing", "growth in electric vehicle deliveries"),
        ("production stoppages", "higher warranty costs", "increased incentive spending"),
        (
            "a shortage of semiconductors could disrupt production",
            "demand for electric vehicles may grow more slowly than expected",
        ),
        (0.03, 0.09),
    ),
)

_NAME_HEADS = (
    "Apex",
    "Arbor",
    "Aster",
    "Beacon",
    "Birchwood",
    "Bluewater",
    "Brightline",
    "Cardinal",
    "Cedar",
    "Cobalt",
    "Crescent",
    "Crown",
    "Delmont",
    "Eastfield",
    "Ember",
    "Evergreen",
    "Falcon",
    "Granite",
    "Harbor",
    "Helix",
    "Horizon",
    "Ironwood",
    "Juniper",
    "Keystone",
    "Lakeside",
    "Liberty",
    "Lumen",
    "Maple",
    "Meridian",
    "Northgate",
    "Oakmont",
    "Orion",
    "Pinnacle",
    "Prairie",
    "Quarry",
    "Redwood",
    "Ridgeline",
    "Sable",
    "Sierra",
    "Silverline",
    "Summit",
    "Terra",
    "Tidewater",
    "Unity",
    "Vantage",
    "Vertex",
    "Westbrook",
    "Willow",
    "Zenith",
    "Kestrel",
)
_FORMS = ("Inc.", "Corp.", "Holdings", "Group", "plc", "Co.")
_FIRST = (
    "Anna",
    "David",
    "Maria",
    "James",
    "Sofia",
    "Robert",
    "Elena",
    "Michael",
    "Laura",
    "Thomas",
    "Priya",
    "Daniel",
    "Grace",
    "Samuel",
    "Helen",
    "Kenji",
    "Olivia",
    "Marcus",
    "Ingrid",
    "Carlos",
    "Fatima",
    "Peter",
)
_LAST = (
    "Albright",
    "Becker",
    "Castillo",
    "Dunmore",
    "Ellison",
    "Fairbanks",
    "Garrison",
    "Hollis",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindgren",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sato",
    "Thornton",
    "Varga",
    "Whitfield",
)
_CITIES = (
    "Chicago",
    "Denver",
    "Boston",
    "Atlanta",
    "Houston",
    "Seattle",
    "Dallas",
    "Charlotte",
    "Minneapolis",
    "Pittsburgh",
    "Phoenix",
    "Columbus",
    "Toronto",
    "London",
    "Dublin",
    "Zurich",
)
_BROKER_HEADS = ("Halvorsen", "Whitcombe", "Brandt", "Castellan", "Redfield", "Lindqvist", "Marlowe", "Ashby")
_BROKER_TAILS = ("Securities", "Capital Markets", "& Company", "Research", "Partners")
_AGENCIES = ("Meridian Ratings", "Northstar Credit Ratings", "Atlas Ratings Service", "Keel Credit Research")
_DATA_FIRMS = ("MarketPulse", "Consensus Metrics", "StreetView Data", "Ledgerline")
_SCALE = (
    "AAA",
    "AA+",
    "AA",
    "AA-",
    "A+",
    "A",
    "A-",
    "BBB+",
    "BBB",
    "BBB-",
    "BB+",
    "BB",
    "BB-",
    "B+",
    "B",
    "B-",
    "CCC+",
    "CCC",
    "CCC-",
)
_LAST_IG = _SCALE.index("BBB-")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_ORDINAL = ("first", "second", "third", "fourth")
# (country, central bank, committee, policy rate name, currency)
_ECONOMIES = (
    ("Norland", "the Central Bank of Norland", "Monetary Policy Committee", "policy rate", "krone"),
    ("Astoria", "the Reserve Bank of Astoria", "Rate Setting Board", "cash rate", "astor"),
    ("Caldera", "the National Bank of Caldera", "Monetary Council", "benchmark lending rate", "peso"),
    ("Westmark", "the Westmark Monetary Authority", "Policy Board", "overnight rate", "mark"),
    ("Eastland", "the Bank of Eastland", "Monetary Policy Board", "base rate", "pound"),
    ("Valdoria", "the Federal Reserve Board of Valdoria", "Open Market Committee", "federal funds rate", "dollar"),
)
_INDEXES = ("Composite 500", "Industrial 30", "Technology 100", "Small Cap 2000")
_UP_VERBS = ("rose", "increased", "grew", "climbed")
_DOWN_VERBS = ("fell", "declined", "decreased", "dropped")


@dataclass(frozen=True)
class _Company:
    name: str
    short: str
    ticker: str
    sector: _Sector
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


def _move(rng: random.Random, pct: float, up: tuple[str, ...] = _UP_VERBS, down: tuple[str, ...] = _DOWN_VERBS) -> str:
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
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _company(rng: random.Random, sector: _Sector | None = None) -> _Company:
    sector = sector or rng.choice(_SECTORS)
    head, suffix = rng.choice(_NAME_HEADS), rng.choice(sector.suffixes)
    revenue = _round_m(10 ** rng.uniform(2.5, 4.8))
    shares = max(5, round(revenue / rng.uniform(10, 60)))  # revenue per share 10-60 keeps EPS plausible
    eps = max(0.05, round(revenue * rng.uniform(*sector.margin) / shares, 2))
    return _Company(
        name=f"{head} {suffix} {rng.choice(_FORMS)}",
        short=f"{head} {suffix}",
        ticker=(head[:3] + suffix[0]).upper(),
        sector=sector,
        exchange=rng.choice(("NYSE", "Nasdaq")),
        city=rng.choice(_CITIES),
        ceo=_person(rng),
        cfo=_person(rng),
        employees=max(100, int(round(revenue * rng.uniform(1.5, 6.0), -2))),
        shares_m=float(shares),
        revenue_m=revenue,
        eps=eps,
        price=round(eps * rng.uniform(10, 35), 2),
    )


def _broker(rng: random.Random) -> str:
    return f"{rng.choice(_BROKER_HEADS)} {rng.choice(_BROKER_TAILS)}"


def _about(rng: random.Random, co: _Company) -> str:
    return _say(
        rng,
        (
            "{name} is {a_sector} company headquartered in {city}. It employs about {emp:,} people and "
            "reported annual revenue of {rev}.",
            "About {short}: {name}, based in {city}, operates in the {sector} industry with approximately "
            "{emp:,} employees. Its shares trade on the {ex} under the symbol {ticker}.",
            "{short} was founded in {city} and is one of the larger {sector} companies in its region, with "
            "{emp:,} employees and {rev} in annual revenue.",
        ),
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
    return _say(
        rng,
        (
            "This release contains forward-looking statements that involve risks and uncertainties. Actual "
            "results may differ materially from those expressed or implied. {short} undertakes no obligation "
            "to update any forward-looking statement.",
            "Certain statements in this announcement are forward-looking and are based on current "
            "expectations of {short} management. They are subject to risks, including those described in "
            "the company's annual report, that could cause actual results to differ materially.",
            "Forward-looking statements speak only as of the date they are made. Investors should not place "
            "undue reliance on them, because actual results of {short} could differ materially.",
        ),
        short=co.short,
    )


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
    qn = f"{_ORDINAL[q - 1]} quarter"
    head = _say(
        rng,
        (
            "{short} ({ticker}) reports {qn} {year} results",
            "{short} {qshort} {year}: revenue {mv}",
            "{short} {verdict} estimates as {qshort} revenue reaches {rev}",
        ),
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
            (
                "{name} ({ex}: {ticker}) reported results for the {qn} of fiscal {year} on {day}.",
                "{name} on {day} announced financial results for its fiscal {year} {qn}.",
            ),
            name=co.name,
            ex=co.exchange,
            ticker=co.ticker,
            qn=qn,
            year=year,
            day=rng.choice(_WEEKDAYS),
        ),
        _say(
            rng,
            (
                "Revenue {mv} to {cur} from {prev} in the same quarter a year earlier.",
                "Total revenue {mv} year over year to {cur}, compared with {prev} a year ago.",
                "Quarterly revenue was {cur}, which {mv} from {prev} in the prior-year period.",
            ),
            mv=_move(rng, g),
            cur=_money(cur),
            prev=_money(prev),
        ),
        _say(
            rng,
            (
                "Net income was {ni}, or {eps} per diluted share, compared with {peps} per share a year earlier.",
                "The company earned {ni}, or {eps} a share, versus {peps} a share in the year-ago quarter.",
            ),
            ni=_money(ni),
            eps=_usd(eps),
            peps=_usd(prior_eps),
        ),
    ]
    if eps != est:
        p1.append(
            _say(
                rng,
                (
                    "Analysts polled by {firm} had expected {est} per share.",
                    "That {bm} the consensus estimate of {est} per share compiled by {firm}.",
                ),
                firm=rng.choice(_DATA_FIRMS),
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
            (
                "The {dir} reflected {d1} and {d2}.",
                "Management attributed the {dir} to {d1}, partly offset by {d2}."
                if g > 0
                else "Management attributed the {dir} to {d1} and {d2}.",
            ),
            dir="increase" if g > 0 else "decline",
            d1=d1,
            d2=d2,
        ),
        _say(
            rng,
            (
                "The {a} segment contributed {sa}, about {share}% of the total, while {b} accounted for the "
                "remaining {sb}.",
                "By segment, {a} revenue was {sa} and {b} revenue was {sb}.",
            ),
            a=seg[0],
            b=seg[1],
            sa=_money(seg_a),
            sb=_money(cur - seg_a),
            share=share,
        ),
        _say(
            rng,
            (
                "Operating income was {op}, giving an operating margin of {m}, compared with {pm} a year earlier.",
                "Operating margin was {m} on operating income of {op}, versus {pm} in the prior-year quarter.",
            ),
            op=_money(op),
            m=_pct(op / cur * 100),
            pm=_pct(op_prev_margin),
        ),
    ]
    quote = _say(
        rng,
        (
            '"We delivered a solid quarter and continued to invest in {a}," said {ceo}, chief executive officer.',
            '"Our teams executed well despite {d}," {ceo}, the chief executive, said in a statement.',
            '"{qn_cap} results show the strength of our {a} franchise," said {ceo}.',
        ),
        a=seg[0],
        ceo=co.ceo,
        d=rng.choice(co.sector.down),
        qn_cap=qn.capitalize(),
    )
    lo = _round_m(cur * 4 * rng.uniform(1.0, 1.08))
    hi = _round_m(lo * rng.uniform(1.02, 1.06))
    extra = [
        quote
        + " "
        + _say(
            rng,
            (
                "Chief financial officer {cfo} said the balance sheet remains strong.",
                "{cfo}, the finance chief, said cost discipline would remain a priority.",
            ),
            cfo=co.cfo,
        ),
        _say(
            rng,
            (
                "For fiscal {ny}, {short} expects revenue of {lo} to {hi}.",
                "The company guided fiscal {ny} revenue to a range of {lo} to {hi}.",
            ),
            ny=year + 1,
            short=co.short,
            lo=_money(lo),
            hi=_money(hi),
        )
        + " "
        + _say(
            rng,
            ("Shares {mv} in after-hours trading.", "The stock {mv} in extended trading."),
            mv=_move(rng, round(_growth(rng, -0.09, 0.09, 0.002) * 100, 1)),
        ),
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
    head = _say(
        rng,
        ("{short} full-year {year} results", "{short} posts fiscal {year} revenue of {rev}"),
        short=co.short,
        year=year,
        rev=_money(cur),
    )
    p1 = [
        _say(
            rng,
            (
                "{name} reported full-year {year} revenue of {cur}, {ud} from {prev} in {py}.",
                "For fiscal {year}, {name} said revenue {mv} to {cur} from {prev}.",
            ),
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
            (
                "Net income {mv} to {ni}, or {eps} per share.",
                "Annual net income was {ni} ({eps} per share), which {mv} from {pni}.",
            ),
            mv=_move(rng, _change(prev_ni, ni)),
            ni=_money(ni),
            pni=_money(prev_ni),
            eps=_usd(eps),
        ),
        _say(
            rng,
            (
                "Free cash flow was {fcf} after capital expenditures of {capex}.",
                "The company generated {fcf} of free cash flow and spent {capex} on capital projects.",
            ),
            fcf=_money(fcf),
            capex=_money(capex),
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "The board proposed a total dividend of {dps} per share for the year, a payout ratio of "
                "about {payout}% of earnings.",
                "Shareholders will receive dividends of {dps} per share, "
                "equal to roughly {payout}% of earnings per share.",
            ),
            dps=_usd(dps),
            payout=payout,
        ),
        _say(
            rng,
            (
                "{ceo}, chief executive, said {year} was a year of {word} for {short}.",
                "Chief executive {ceo} described the year as one of {word}.",
            ),
            ceo=co.ceo,
            year=year,
            short=co.short,
            word=rng.choice(("disciplined execution", "transition", "record growth", "investment")),
        ),
    ]
    extra = [
        _say(
            rng,
            (
                "The {a} business was the main contributor, helped by {d}.",
                "Results in {a} benefited from {d}, while {b} was weaker.",
            ),
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
    head = _say(
        rng,
        ("{short} {v} full-year outlook", "{short} {v} {year} revenue forecast"),
        short=co.short,
        year=year,
        v="raises" if raise_ else "cuts",
    )
    p1 = [
        _say(
            rng,
            (
                "{name} {v} its full-year {year} revenue forecast to {nl} to {nh}, from {ol} to {oh} previously.",
                "{name} said it now expects {year} revenue of {nl} to {nh}, {cmp} its earlier range of {ol} to {oh}.",
            ),
            name=co.name,
            year=year,
            v="raised" if raise_ else "lowered",
            nl=_money(new_lo),
            nh=_money(new_hi),
            ol=_money(old_lo),
            oh=_money(old_hi),
            cmp="above" if raise_ else "below",
        ),
        _say(
            rng,
            (
                "At the midpoint, the new outlook is {c} {dir} than before.",
                "The midpoint of the range moves {c} {dir}.",
            ),
            c=_pct(abs(_change(mid_old, mid_new))),
            dir="higher" if raise_ else "lower",
        ),
        _say(
            rng,
            ("The company cited {d}.", "{short} pointed to {d} as the main reason."),
            short=co.short,
            d=rng.choice(co.sector.up if raise_ else co.sector.down),
        ),
    ]
    p2 = [
        _say(
            rng,
            ("Shares {mv} to {p} in {session} trading.", "The stock {mv} to close at {p}."),
            mv=_move(rng, move),
            p=_usd(new_price),
            session=rng.choice(("early", "afternoon", "premarket")),
        ),
        _say(
            rng,
            ('"{q}," said chief financial officer {cfo}.', '"{q}," {cfo}, the CFO, told analysts.'),
            cfo=co.cfo,
            q="Demand has been stronger than we planned for"
            if raise_
            else "We are taking a more cautious view of the second half",
        ),
    ]
    extra = [
        _say(
            rng,
            (
                "{b} analyst {a} said the {w} had been {e} by investors.",
                "According to {a} of {b}, the revision was {e}.",
            ),
            b=_broker(rng),
            a=_person(rng),
            w="upgrade" if raise_ else "cut",
            e=rng.choice(("largely expected by investors", "a surprise to investors", "widely anticipated")),
        ),
        _about(rng, co),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _central_bank(rng: random.Random) -> _Doc:
    country, bank, committee, rate_name, _cur = rng.choice(_ECONOMIES)
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
    month = rng.choice(_MONTHS)
    action = "raised" if bp > 0 else "cut" if bp < 0 else "held"
    bank_cap = bank[0].upper() + bank[1:]
    if bp:
        head = _say(
            rng,
            ("{b} {a} {rate} by {n} bp to {new:.2f}%", "{c} central bank {a2} rates to {new:.2f}%"),
            b=bank_cap,
            a=action,
            rate=rate_name,
            n=abs(bp),
            new=new,
            c=country,
            a2="raises" if bp > 0 else "cuts",
        )
    else:
        head = _say(
            rng,
            ("{b} holds {rate} at {new:.2f}%", "{c} central bank keeps rates on hold"),
            b=bank_cap,
            rate=rate_name,
            new=new,
            c=country,
        )
    if bp:
        s1 = _say(
            rng,
            (
                "{bank_cap} {a} its {rate} by {n} basis points to {new:.2f}% at its {month} meeting.",
                "At its {month} {year} meeting, the {committee} of {bank} {a} the {rate} by {n} "
                "basis points, taking it from {old:.2f}% to {new:.2f}%.",
            ),
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
            (
                "{bank_cap} left its {rate} unchanged at {new:.2f}% at its {month} meeting.",
                "The {committee} of {bank} held the {rate} at {new:.2f}% in {month} {year}.",
            ),
            bank_cap=bank_cap,
            bank=bank,
            rate=rate_name,
            new=new,
            month=month,
            year=year,
            committee=committee,
        )
    vote = (
        "The decision was unanimous."
        if not dissent
        else f"The {committee} voted {members - dissent} to {dissent}, with the minority preferring "
        + ("a smaller move." if bp else "a change in rates.")
    )
    gap = round(infl - target, 1)
    p1 = [s1, vote]
    p2 = [
        _say(
            rng,
            (
                "Annual inflation was {i}% in the latest reading, {g} the {t:.0f}% target.",
                "Consumer price inflation stood at {i}%, {g} the bank's {t:.0f}% goal.",
            ),
            i=infl,
            t=target,
            g=f"{abs(gap)} percentage points above"
            if gap > 0
            else f"{abs(gap)} percentage points below"
            if gap < 0
            else "exactly at",
        ),
        _say(
            rng,
            ("The statement said {s}.", "Policymakers noted that {s}."),
            s=rng.choice(
                (
                    "the labor market remains tight",
                    "growth in household spending has slowed",
                    "wage growth has moderated",
                    "credit conditions have tightened",
                    "business investment remains subdued",
                )
            ),
        ),
        _say(
            rng,
            (
                "The bank now projects economic growth of {n}% in {year}, {r} from {o}%.",
                "Staff forecasts for {year} GDP growth were {r} to {n}% from {o}%.",
            ),
            n=growth_new,
            o=growth_old,
            year=year,
            r="revised up" if growth_new > growth_old else "revised down",
        ),
    ]
    extra = [
        _say(
            rng,
            (
                "{gov}, the governor, said further {w} would depend on incoming data.",
                "Governor {gov} told reporters that the {committee} stands ready to {w2} if needed.",
            ),
            gov=_person(rng),
            committee=committee,
            w=rng.choice(("tightening", "easing", "adjustments")),
            w2=rng.choice(("act", "adjust policy")),
        ),
        _say(
            rng,
            (
                "The bank will continue to reduce its bond holdings by {n} billion {cur}s a month.",
                "Balance sheet run-off will continue at a pace of {n} billion {cur}s per month.",
            ),
            n=rng.choice((5, 10, 15, 20, 30)),
            cur=_cur,
        ),
        _say(
            rng,
            (
                "The two-year government bond yield {mv} basis points to {y:.2f}% after the announcement, "
                "and the {cur} {fx} against the dollar.",
                "Markets reacted {how}: two-year yields moved {mv} basis points to {y:.2f}%.",
            ),
            mv=("rose " if bp >= 0 else "fell ") + str(rng.randint(1, 15)),
            y=new + rng.uniform(-0.3, 0.4),
            cur=_cur,
            fx=rng.choice(("strengthened", "weakened")),
            how=rng.choice(("calmly", "sharply")),
        ),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _rating_action(rng: random.Random) -> _Doc:
    co = _company(rng)
    agency = rng.choice(_AGENCIES)
    kind = rng.choice(("upgrade", "downgrade", "affirm"))
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
    outlook = rng.choice(
        {
            "upgrade": ("stable", "stable", "positive"),
            "downgrade": ("stable", "stable", "negative"),
            "affirm": ("stable", "stable", "positive", "negative"),
        }[kind]
    )
    year = rng.randint(2015, 2025)
    verb = {"upgrade": "upgraded", "downgrade": "downgraded", "affirm": "affirmed"}[kind]
    head = _say(
        rng,
        ("{agency} {v} {short} {prep} {new}", "{short} rating {v2} at {agency}"),
        agency=agency,
        short=co.short,
        new=_SCALE[new],
        v=verb[:-1] + "s",
        prep="at" if kind == "affirm" else "to",
        v2={"upgrade": "raised", "downgrade": "lowered", "affirm": "affirmed"}[kind],
    )
    if kind == "affirm":
        s1 = _say(
            rng,
            (
                "{agency} affirmed the {r} long-term issuer rating of {name}. The outlook is {o}.",
                "{agency} said it affirmed {name} at {r} with a {o} outlook.",
            ),
            agency=agency,
            r=_SCALE[old],
            name=co.name,
            o=outlook,
        )
    else:
        s1 = _say(
            rng,
            (
                "{agency} {v} the long-term issuer rating of {name} by {n} to {new} from {old}. The outlook is {o}.",
                "{agency} on {day} {v} {name} to {new} from {old}, a move of {n}. It assigned a {o} outlook.",
            ),
            agency=agency,
            v=verb,
            name=co.name,
            n="one notch" if notches == 1 else "two notches",
            new=_SCALE[new],
            old=_SCALE[old],
            o=outlook,
            day=rng.choice(_WEEKDAYS),
        )
    p1 = [s1]
    if kind == "downgrade" and old <= _LAST_IG < new:
        p1.append("The action moves the company below investment grade, making it a so-called fallen angel.")
    if kind == "upgrade" and new <= _LAST_IG < old:
        p1.append("The upgrade returns the company to investment grade.")
    p2 = [
        _say(
            rng,
            (
                "Leverage, measured as debt to EBITDA, {m} to {n:.1f} times from {o:.1f} times, with total "
                "debt of {debt} against EBITDA of {e}.",
                "The agency estimates debt of {debt} and EBITDA of "
                "{e}, or leverage of {n:.1f} times, compared with {o:.1f} times a year earlier.",
            ),
            m="improved" if lev_new < lev_old else "rose",
            n=lev_new,
            o=lev_old,
            debt=_money(debt),
            e=_money(ebitda),
        ),
        _say(
            rng,
            ("The action reflects {d}.", "{agency} said the rating reflects {d}."),
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
        _say(
            rng,
            (
                "The rating could be lowered if leverage rose above {t:.1f} times on a sustained basis. It "
                "could be raised if leverage fell below {u:.1f} times.",
                "Factors that could lead to a downgrade include leverage above {t:.1f} times through {y}.",
            ),
            t=trig,
            u=max(0.5, round(lev_new - 1.0, 1)),
            y=year + 1,
        ),
        _say(
            rng,
            (
                "About {d} of senior unsecured notes are affected by the action.",
                "The rating applies to {d} of outstanding senior debt.",
            ),
            d=_money(debt * 0.8),
        ),
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
    head = _say(
        rng,
        ("{short} prices {size} of {t}-year notes", "New issue: {short} {t}-year bonds at T+{s}"),
        short=co.short,
        size=_money(size),
        t=tenor,
        s=spread,
    )
    p1 = [
        _say(
            rng,
            (
                "{name}, rated {r}, sold {size} of senior unsecured notes due {m} on {day}.",
                "{name} ({r}) priced a {size} offering of {t}-year senior notes maturing in {m}.",
            ),
            name=co.name,
            r=_SCALE[r],
            size=_money(size),
            m=year + tenor,
            t=tenor,
            day=rng.choice(_WEEKDAYS),
        ),
        _say(
            rng,
            (
                "The notes pay a coupon of {c:.3f}% and were priced at par, a spread of {s} basis points over "
                "the {t}-year Treasury yield of {u:.3f}%.",
                "Priced at par with a {c:.3f}% coupon, the bonds "
                "came {s} basis points over Treasuries, which yielded {u:.3f}%.",
            ),
            c=yld,
            s=spread,
            t=tenor,
            u=ust,
        ),
        _say(
            rng,
            (
                "Initial price talk was around {ipt} basis points, so the deal tightened by {d} basis points.",
                "Pricing tightened {d} basis points from initial talk of {ipt} basis points over.",
            ),
            ipt=ipt,
            d=ipt - spread,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "The order book peaked at {book}, or {c:.1f} times the amount offered.",
                "Investors placed orders of {book}, covering the deal {c:.1f} times.",
            ),
            book=_money(size * cover),
            c=cover,
        ),
        _say(
            rng,
            ("Proceeds will be used to {u}.", "{short} plans to use the proceeds to {u}."),
            short=co.short,
            u=rng.choice(
                (
                    "refinance existing debt",
                    "fund an acquisition",
                    "repay borrowings under its revolving credit facility",
                    "fund capital expenditures",
                    "for general corporate purposes",
                )
            ),
        ),
    ]
    extra = [
        _say(
            rng,
            ("{b1} and {b2} were joint bookrunners.", "The deal was led by {b1}, with {b2} as co-manager."),
            b1=_broker(rng),
            b2=_broker(rng),
        ),
        _say(
            rng,
            (
                "Annual interest on the notes will be about {i}.",
                "The coupon implies annual interest expense of roughly {i}.",
            ),
            i=_money(size * yld / 100),
        ),
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
    head = _say(
        rng,
        ("{short} reprices {size} term loan at {ref} plus {n}", "Loan market: {short} trims margin by {cut} bp"),
        short=co.short,
        size=_money(size),
        ref=ref,
        n=new_m,
        cut=cut,
    )
    p1 = [
        _say(
            rng,
            (
                "{name} repriced its {size} term loan B to {ref} plus {n} basis points from {ref} plus {o}.",
                "Lenders agreed to cut the margin on {name_s} {size} term loan by {cut} basis points, to "
                "{ref} plus {n}.",
            ),
            name=co.name,
            name_s=_poss(co.name),
            size=_money(size),
            ref=ref,
            n=new_m,
            o=old_m,
            cut=cut,
        ),
        _say(
            rng,
            (
                "The {cut} basis point reduction saves the company about {s} of interest a year.",
                "At {cut} basis points on {size}, annual interest savings come to roughly {s}.",
            ),
            cut=cut,
            size=_money(size),
            s=_money(size * cut / 10000),
        ),
        _say(
            rng,
            (
                "The loan was offered at {oid} cents on the dollar with a {f}% {ref} floor.",
                "Pricing included an original issue discount of {disc} points and a {f}% floor.",
            ),
            oid=f"{oid:g}",
            disc=f"{100 - oid:g}",
            f=rng.choice(("0.50", "0.75", "0")),
            ref=ref,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "Pro forma leverage is about {l:.1f} times, and the loan matures in {m}.",
                "The borrower's net leverage stands near {l:.1f} times; the facility matures in {m}.",
            ),
            l=lev,
            m=year + rng.randint(5, 7),
        ),
        _say(rng, ("{b} is the lead arranger.", "The transaction is being arranged by {b}."), b=_broker(rng)),
        _say(
            rng,
            ("Repricings have been common as {w}.", "Arrangers said demand from {w2} remains strong."),
            w=rng.choice(("loan prices trade above par", "investor demand outpaces new supply")),
            w2=rng.choice(("collateralized loan obligations", "loan mutual funds", "private credit funds")),
        ),
    ]
    extra = [_about(rng, co)]
    return head, [" ".join(p1), " ".join(p2)], extra


def _analyst_note(rng: random.Random) -> _Doc:
    co = _company(rng)
    broker, analyst = _broker(rng), _person(rng)
    year = rng.randint(2015, 2025)
    view = rng.choice(("positive", "positive", "neutral", "negative"))
    rating = rng.choice(
        {
            "positive": ("buy", "overweight", "outperform"),
            "neutral": ("hold", "neutral", "equal-weight"),
            "negative": ("sell", "underweight", "underperform"),
        }[view]
    )
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
    action = rng.choice(("initiated coverage of", "resumed coverage of", "reiterated its view on"))
    head = _say(
        rng,
        ("{broker} {a} {short} at {r}, target {pt}", "{short}: {r} rating, {pt} target from {broker}"),
        broker=broker,
        a=action.split(" ")[0][:-1] + "s",
        short=co.short,
        r=rating,
        pt=_usd(pt),
    )
    p1 = [
        _say(
            rng,
            (
                "{broker} {action} {name} ({ticker}) with {r} rating and a price target of {pt}.",
                "Analyst {an} of {broker} {action} {short} with {r} rating and a {pt} price target.",
            ),
            broker=broker,
            action=action,
            name=co.name,
            ticker=co.ticker,
            r=_a(rating),
            pt=_usd(pt),
            an=analyst,
            short=co.short,
        ),
        _say(
            rng,
            (
                "The target implies {u} {d} from the last close of {p}.",
                "Against the closing price of {p}, that is {u} of {d}.",
            ),
            u=_pct(abs(up)),
            d="upside" if up >= 0 else "downside",
            p=_usd(co.price),
        ),
        _say(
            rng,
            (
                "The target is based on {pe:.1f} times estimated {y} earnings of {e2} per share.",
                "{broker} values the stock at {pe:.1f} times {y} earnings per share, which it forecasts at {e2}.",
            ),
            pe=pe,
            y=year + 1,
            e2=_usd(e2),
            broker=broker,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "The firm forecasts earnings per share of {e1} in {y0} and {e2} in {y1}, growth of {g}.",
                "{broker} expects earnings per share to grow {g} from {e1} in {y0} to {e2} in {y1}.",
            ),
            e1=_usd(e1),
            e2=_usd(e2),
            y0=year,
            y1=year + 1,
            g=_pct(_change(e1, e2)),
            broker=broker,
        ),
        _say(
            rng,
            ("The analyst highlighted {d} as a key driver.", "{broker} sees {d} as the main {w}."),
            d=rng.choice(co.sector.up if view != "negative" else co.sector.down),
            broker=broker,
            w="catalyst" if view != "negative" else "risk",
        ),
    ]
    extra = [
        _say(
            rng,
            ("Risks to the view include {r}.", "Key risks: {r}."),
            r=rng.choice(co.sector.down if view != "negative" else co.sector.up),
        ),
        _say(
            rng,
            (
                "Of the {n} analysts covering the stock, {b} rate it a buy.",
                "{b} of {n} analysts tracked by {firm} recommend buying the shares.",
            ),
            n=(n := rng.randint(8, 30)),
            b=rng.randint(2, n),
            firm=rng.choice(_DATA_FIRMS),
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
    head = _say(
        rng,
        ("{name} annual report {year}: risk factors", "Risk factors and market risk disclosures - {short}"),
        name=co.name,
        short=co.short,
        year=year,
    )
    r1, r2 = co.sector.risks
    p1 = [
        _say(
            rng,
            (
                "Our business is subject to a number of risks. In particular, {r1}.",
                "Investors should consider the following risks carefully. First, {r1}.",
            ),
            r1=r1,
        ),
        _say(rng, ("In addition, {r2}.", "We also note that {r2}."), r2=r2),
        _say(
            rng,
            (
                "Our largest customer accounted for approximately {t}% of revenue in fiscal {y}, and the loss "
                "of this customer could materially affect our results.",
                "In fiscal {y}, our ten largest customers represented {t2}% of revenue.",
            ),
            t=top,
            t2=min(95, top * 3),
            y=year,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "As of December 31, {y}, we had {d} of outstanding debt, of which {v} ({p}%) bore interest "
                "at variable rates.",
                "At year-end {y}, total indebtedness was {d}; {p}% of it, or {v}, was at floating rates.",
            ),
            y=year,
            d=_money(debt),
            v=_money(var_debt),
            p=var_pct,
        ),
        _say(
            rng,
            (
                "A hypothetical 100 basis point increase in interest rates would raise annual interest "
                "expense by approximately {i}.",
                "Each 100 basis point rise in rates would increase our annual interest cost by about {i}.",
            ),
            i=_money(var_debt / 100),
        ),
        _say(
            rng,
            (
                "About {f}% of our revenue is earned in currencies other than the U.S. dollar. A 10% "
                "strengthening of the dollar would have reduced revenue by roughly {x}.",
                "Non-dollar revenue was {f}% of the total; a 10% stronger dollar would have lowered revenue "
                "by about {x}.",
            ),
            f=fx_pct,
            x=_money(co.revenue_m * fx_pct / 1000),
        ),
    ]
    extra = [
        _say(
            rng,
            (
                "We may be unable to refinance our debt on acceptable terms, particularly the {m} due in {y}.",
                "Of our total debt, {m} matures in {y}, and we may need to refinance it at higher rates.",
            ),
            m=_money(debt * rng.uniform(0.1, 0.4)),
            y=year + rng.randint(1, 4),
        ),
        "Cybersecurity incidents, changes in tax law and litigation could also adversely affect our financial "
        "condition and results of operations.",
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
    head = _say(
        rng,
        ("{short} raises quarterly dividend to {d}", "{short} lifts payout {g}, adds {bb} buyback"),
        short=co.short,
        d=_usd(new),
        g=_pct(_change(old, new)),
        bb=_money(bb),
    )
    pay_m = rng.randint(0, 10)
    p1 = [
        _say(
            rng,
            (
                "The board of {name} declared a quarterly dividend of {n} per share, up from {o}, an increase of {g}.",
                "{name} increased its quarterly dividend by {g} to {n} a share from {o}.",
            ),
            name=co.name,
            n=_usd(new),
            o=_usd(old),
            g=_pct(_change(old, new)),
        ),
        _say(
            rng,
            (
                "The dividend is payable on {m} {d}, {y}, to shareholders of record on {m0} {d0}.",
                "It will be paid on {m} {d}, {y}, to holders of record as of {m0} {d0}.",
            ),
            m=_MONTHS[pay_m + 1],
            d=rng.randint(1, 28),
            y=year,
            m0=_MONTHS[pay_m],
            d0=rng.randint(1, 28),
        ),
        _say(
            rng,
            (
                "On an annual basis the new dividend equals {a} per share, a yield of {y} at the current price of {p}.",
                "The annualized payout of {a} represents a {y} yield based on a share price of {p}.",
            ),
            a=_usd(new * 4),
            y=_pct(new * 4 / co.price * 100, 2),
            p=_usd(co.price),
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "The company also authorized a share repurchase program of up to {bb}, or about {p} of its "
                "{mc} market value.",
                "Separately, {short} approved a buyback of up to {bb}, equivalent to "
                "roughly {p} of the company's market capitalization of {mc}.",
            ),
            bb=_money(bb),
            p=_pct(bb / mcap * 100),
            mc=_money(mcap),
            short=co.short,
        ),
        _say(
            rng,
            (
                "{cfo}, chief financial officer, said the moves reflect confidence in cash generation.",
                '"We are committed to returning capital to shareholders," said {ceo}.',
            ),
            cfo=co.cfo,
            ceo=co.ceo,
        ),
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
    head = _say(
        rng, ("{a} to buy {t} for {ev}", "{a} agrees {ev} deal for {t}"), a=acq.short, t=tgt.short, ev=_money(ev)
    )
    consideration = "in cash" if cash_pct == 100 else f"in cash and stock ({cash_pct}% cash)"
    p1 = [
        _say(
            rng,
            (
                "{a} agreed to acquire {t} for {o} per share {c}, valuing its equity at {eq}.",
                "{a} said on {day} it will buy {t} at {o} a share {c}, for an equity value of {eq}.",
            ),
            a=acq.name,
            t=tgt.name,
            o=_usd(offer),
            c=consideration,
            eq=_money(eq),
            day=rng.choice(_WEEKDAYS),
        ),
        _say(
            rng,
            (
                "The price is a {p} premium to {t_s} last close of {c}.",
                "The offer represents a premium of {p} over the closing price of {c}.",
            ),
            p=_pct(prem),
            t_s=_poss(tgt.short),
            c=_usd(tgt.price),
        ),
        _say(
            rng,
            (
                "Including {nd} of net debt, the enterprise value is {ev}, or {m:.1f} times {t_s} EBITDA of {e}.",
                "The deal values {t} at {ev} including net debt of {nd}, about {m:.1f} times EBITDA of {e}.",
            ),
            nd=_money(net_debt),
            ev=_money(ev),
            m=ev / ebitda,
            e=_money(ebitda),
            t=tgt.short,
            t_s=_poss(tgt.short),
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "{a} expects annual cost savings of {s} by {y}.",
                "The companies target {s} of yearly synergies within two years, by {y}.",
            ),
            a=acq.short,
            s=_money(syn),
            y=year + 2,
        ),
        _say(
            rng,
            (
                "The transaction is expected to close in the {h} half of {y}, subject to regulatory and "
                "shareholder approval.",
                "Closing is expected in the {h} half of {y}, pending approvals.",
            ),
            h=rng.choice(("first", "second")),
            y=year + 1,
        ),
        _say(
            rng,
            ("{b1} advised {a}, while {b2} advised {t}.", "{a} was advised by {b1}; {t} by {b2}."),
            b1=_broker(rng),
            b2=_broker(rng),
            a=acq.short,
            t=tgt.short,
        ),
    ]
    extra = [
        _say(
            rng,
            (
                '"Combining with {t} strengthens our position in {seg}," said {ceo}, chief executive of {a}.',
                '"This is a compelling combination for both sets of shareholders," {ceo} said.',
            ),
            t=tgt.short,
            seg=rng.choice(acq.sector.segments),
            ceo=acq.ceo,
            a=acq.short,
        ),
        _about(rng, acq),
        _forward_looking(rng, acq),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _equity_wrap(rng: random.Random) -> _Doc:
    idx = rng.sample(_INDEXES, 2)
    day = rng.choice(_WEEKDAYS)
    lv = [round(rng.uniform(1500, 40000), 2) for _ in idx]
    ch = [round(_growth(rng, -2.5, 2.5, 0.05), 2) for _ in idx]
    new = [round(a * (1 + c / 100), 2) for a, c in zip(lv, ch, strict=True)]
    best, worst = rng.sample(_SECTORS, 2)
    co = _company(rng)
    mover = round(_growth(rng, -18, 18, 3), 1)
    y10 = round(rng.uniform(0.6, 5.0), 2)
    dy = rng.randint(-12, 12)

    def idx_line(i: int) -> str:
        pts = round(new[i] - lv[i], 2)
        d = "up" if pts > 0 else "down" if pts < 0 else "unchanged"
        return f"the {idx[i]} closed {d} {abs(ch[i]):.2f}% at {new[i]:,.2f}, a move of {abs(pts):,.2f} points"

    head = _say(
        rng,
        ("Stocks {d} on {day}; {s} lead", "Market close: {i} {d2} {c:.2f}%"),
        d="rise" if ch[0] > 0 else "fall",
        day=day,
        s=best.name,
        i=idx[0],
        d2="up" if ch[0] > 0 else "down",
        c=abs(ch[0]),
    )
    p1 = [
        _say(
            rng,
            ("Stocks {m} on {day}. {l1}.", "Equities {m} in {day} trading. {l1}."),
            m="advanced" if ch[0] > 0 else "declined",
            day=day,
            l1=_cap(idx_line(0)),
        ),
        _cap(idx_line(1)) + ".",
        _say(
            rng,
            (
                "{b} shares were the best performers, while {w} stocks lagged.",
                "Among sectors, {b2} led and {w} trailed.",
            ),
            b=_cap(best.name),
            b2=best.name,
            w=worst.name,
        ),
    ]
    p2 = [
        _say(
            rng,
            ("{name} {mv} after {r}.", "Shares of {name} {mv}, the biggest move in the index, after {r}."),
            name=co.short,
            mv=_move(rng, mover),
            r=rng.choice(
                ("strong quarterly results", "an analyst upgrade", "it raised its outlook", "it agreed to be acquired")
                if mover > 0
                else (
                    "disappointing quarterly results",
                    "an analyst downgrade",
                    "it cut its outlook",
                    "a credit rating downgrade",
                )
            ),
        ),
        _say(
            rng,
            (
                "The 10-year Treasury yield {m}, ending at {y:.2f}%.",
                "In bonds, the 10-year yield {m} and closed at {y:.2f}%.",
            ),
            m=f"{'rose' if dy > 0 else 'fell'} {abs(dy)} basis points" if dy else "was little changed",
            y=y10,
        ),
    ]
    extra = [
        _say(
            rng,
            ("Investors were focused on {f}.", "Traders said attention was on {f}."),
            f=rng.choice(
                (
                    "the upcoming inflation report",
                    "central bank commentary",
                    "corporate earnings",
                    "bond yields",
                    "oil prices",
                )
            ),
        ),
        _say(
            rng,
            (
                "About {v:.1f} billion shares changed hands, {c} the 20-day average.",
                "Volume was {v:.1f} billion shares, {c} average.",
            ),
            v=rng.uniform(8, 16),
            c=rng.choice(("above", "below", "in line with")),
        ),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _economic_data(rng: random.Random) -> _Doc:
    country = rng.choice(_ECONOMIES)[0]
    year = rng.randint(2015, 2025)
    mi = rng.randint(0, 11)
    month = _MONTHS[mi]
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
        ("{c} inflation {v} {i}% in {m}", "{c} {m} data: CPI {i}%, jobs {j:+d}k"),
        c=country,
        v="rises to" if cpi > prev_cpi else "eases to" if cpi < prev_cpi else "holds at",
        i=cpi,
        m=month,
        j=jobs,
    )
    cmp_fc = "above" if cpi > fc else "below" if cpi < fc else "in line with"
    p1 = [
        _say(
            rng,
            (
                "Consumer prices in {c} rose {i}% in {m} {y} from a year earlier, after {p}% in {pm}.",
                "Annual inflation in {c} was {i}% in {m} {y}, compared with {p}% the month before.",
            ),
            c=country,
            i=cpi,
            m=month,
            p=prev_cpi,
            pm=_MONTHS[mi - 1],
            y=year,
        ),
        _say(
            rng,
            (
                "Economists had expected {f}%, so the reading was {cmp} forecasts.",
                "The figure was {cmp} the {f}% median forecast of economists.",
            ),
            f=fc,
            cmp=cmp_fc,
        ),
        _say(
            rng,
            (
                "Core inflation, which excludes food and energy, was {k}%.",
                "Excluding volatile food and energy, prices rose {k}%.",
            ),
            k=core,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "Employers {v} {j:,} jobs in {m}, {cmp} the {f:,} expected.",
                "Payrolls {v2} by {j:,} in {m}, versus forecasts of {f:,}.",
            ),
            v="added" if jobs >= 0 else "cut",
            v2="rose" if jobs >= 0 else "fell",
            j=abs(jobs * 1000),
            m=month,
            cmp="more than" if jobs > jobs_fc else "fewer than" if jobs < jobs_fc else "matching",
            f=jobs_fc * 1000,
        ),
        _say(
            rng,
            ("The unemployment rate {v} {u}% from {p}%.", "Unemployment was {u}%, compared with {p}% a month earlier."),
            u=ur,
            p=ur_prev,
            v="rose to" if ur > ur_prev else "fell to" if ur < ur_prev else "held at",
        ),
    ]
    extra = [
        _say(
            rng,
            (
                "Economists at {b} said the data {w} the case for {a}.",
                "{b} said the report {w} pressure on policymakers to {a2}.",
            ),
            b=_broker(rng),
            w=rng.choice(("strengthens", "weakens")),
            a=rng.choice(("further rate increases", "rate cuts", "a pause in policy changes")),
            a2=rng.choice(("raise rates", "cut rates", "stay on hold")),
        ),
        _say(
            rng,
            ("Average hourly earnings rose {w}% from a year earlier.", "Wage growth was {w}% year over year."),
            w=round(rng.uniform(1.5, 6.0), 1),
        ),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _treasury_auction(rng: random.Random) -> _Doc:
    country = rng.choice(_ECONOMIES)[0]
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
        ("{c} {t}-year auction {r}", "{t}-year note sale draws {b:.2f} bid-to-cover"),
        c=country,
        t=tenor,
        b=btc,
        r="tails" if tail_bp > 0 else "stops through" if tail_bp < 0 else "prices on the screws",
    )
    p1 = [
        _say(
            rng,
            (
                "The {c} Treasury sold {s} of {t}-year notes at a high yield of {hy:.3f}%.",
                "{c} auctioned {s} of {t}-year debt, with a high yield of {hy:.3f}%.",
            ),
            c=country,
            s=_money(size * 1000),
            t=tenor,
            hy=hy,
        ),
        _say(
            rng,
            (
                "That was {a} basis points {d} the when-issued yield of {wi:.3f}% at the bidding deadline.",
                "The when-issued yield was {wi:.3f}%, so the sale priced {a} basis points {d} it.",
            ),
            a=abs(tail_bp),
            d="above" if tail_bp > 0 else "below",
            wi=wi,
        )
        if tail_bp
        else f"The auction priced exactly at the when-issued yield of {wi:.3f}%.",
        _say(
            rng,
            (
                "Bids totaled {b:.2f} times the amount offered, compared with an average of {a:.2f} at the "
                "previous six sales.",
                "The bid-to-cover ratio was {b:.2f}, versus a recent average of {a:.2f}.",
            ),
            b=btc,
            a=avg,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "Indirect bidders, a group that includes foreign central banks, took {i}% of the notes, and "
                "direct bidders took {d}%. Primary dealers were left with the remaining {p}%.",
                "Indirects were awarded {i}%, directs {d}%, and dealers {p}%.",
            ),
            i=ind,
            d=dire,
            p=100 - ind - dire,
        ),
        _say(
            rng,
            ("Strategists described demand as {w}.", "Traders called the result {w}."),
            w="soft" if tail_bp > 0 else "strong" if tail_bp < 0 else "solid",
        ),
    ]
    extra = [
        _say(
            rng,
            (
                "The sale was part of {n} of coupon supply this week.",
                "This week's auctions total {n} across maturities.",
            ),
            n=_money(size * 1000 * 2.5),
        )
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _ipo(rng: random.Random) -> _Doc:
    co = _company(rng)
    lo = rng.randint(12, 40)
    hi = lo + rng.choice((2, 3, 4))
    pos = rng.choice(("above", "top", "middle", "bottom"))
    price = {"above": hi + 1, "top": hi, "middle": (lo + hi) / 2, "bottom": lo}[pos]
    out = max(10, round(co.revenue_m * rng.uniform(0.5, 4.0) / price))  # millions of shares outstanding
    shares = max(2, round(out * rng.uniform(0.08, 0.25)))
    raised = _round_m(shares * price)
    mcap = _round_m(out * price)
    op = round(price * (1 + _growth(rng, -0.2, 0.6)), 2)
    year = rng.randint(2015, 2025)
    where = {
        "above": "above the",
        "top": "at the top of its",
        "middle": "in the middle of its",
        "bottom": "at the bottom of its",
    }[pos]
    head = _say(
        rng,
        ("{short} prices IPO at {p}", "{short} raises {r} in {ex} debut"),
        short=co.short,
        p=_usd(price),
        r=_money(raised),
        ex=co.exchange,
    )
    p1 = [
        _say(
            rng,
            (
                "{name} priced its initial public offering of {s} million shares at {p}, {w} marketed range "
                "of {lo} to {hi}.",
                "{name} sold {s} million shares at {p} each in its IPO, {w} {lo}-{hi} range.",
            ),
            name=co.name,
            s=shares,
            p=_usd(price),
            w=where,
            lo=_usd(lo),
            hi=_usd(hi),
        ),
        _say(
            rng,
            (
                "The offering raised {r} and values the company at {mc} based on {o} million shares outstanding.",
                "The deal raised {r}; with {o} million shares outstanding, the market value is {mc}.",
            ),
            r=_money(raised),
            mc=_money(mcap),
            o=out,
        ),
        _say(
            rng,
            (
                "The stock opened at {op} on the {ex} under the ticker {t}, {ud} from the offer price.",
                "Trading under {t} on the {ex}, shares opened at {op}, a move of {c} versus the IPO price.",
            ),
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
            (
                "{short}, {a_s} company based in {city}, reported revenue of {rev} in {y}.",
                "Founded in {city}, the {s} company had {rev} of revenue last year.",
            ),
            short=co.short,
            s=co.sector.name,
            a_s=_a(co.sector.name),
            city=co.city,
            rev=_money(co.revenue_m),
            y=year - 1,
        ),
        _say(
            rng,
            ("{b1} and {b2} led the offering.", "The underwriters were led by {b1} and {b2}."),
            b1=_broker(rng),
            b2=_broker(rng),
        ),
    ]
    extra = [
        _say(
            rng,
            ("It is the {n} largest listing of {y} so far.", "The IPO market has {w} in {y}."),
            n=rng.choice(("second", "third", "fifth", "tenth")),
            y=year,
            w=rng.choice(("recovered", "been slow", "picked up")),
        ),
        _say(
            rng,
            ("Proceeds will be used to {u}.", "The company plans to use the money to {u}."),
            u=rng.choice(("repay debt", "expand into new markets", "fund research and development")),
        ),
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _fund_commentary(rng: random.Random) -> _Doc:
    style = rng.choice(
        (
            "Global Equity",
            "Dividend Growth",
            "Short Duration Bond",
            "High Yield",
            "Emerging Markets",
            "Small Cap Value",
            "Balanced Income",
        )
    )
    fund = f"{rng.choice(_NAME_HEADS)} {style} Fund"
    bench = rng.choice(_INDEXES)
    q, year = rng.randint(1, 4), rng.randint(2015, 2025)
    bret = round(rng.gauss(1.5, 5.0), 2)
    fret = round(bret + rng.gauss(0, 1.2), 2)
    ex_bp = round((fret - bret) * 100)
    aum = _round_m(10 ** rng.uniform(2.3, 4.3))
    c1, c2 = _company(rng), _company(rng)
    head = _say(rng, ("{f}: Q{q} {y} commentary", "{f} quarterly review, Q{q} {y}"), f=fund, q=q, y=year)
    p1 = [
        _say(
            rng,
            (
                "The {f} returned {r:.2f}% in the {o} quarter of {y}, compared with {b:.2f}% for its "
                "benchmark, {bench}.",
                "In Q{q} {y}, the fund returned {r:.2f}% versus {b:.2f}% for {bench}.",
            ),
            f=fund,
            r=fret,
            o=_ORDINAL[q - 1],
            y=year,
            b=bret,
            bench=bench,
            q=q,
        ),
        (
            f"The fund {'outperformed' if ex_bp > 0 else 'underperformed'} by {abs(ex_bp)} basis points."
            if ex_bp
            else "Performance was in line with the benchmark."
        ),
        _say(
            rng,
            ("Assets under management were {a} at quarter end.", "The fund managed {a} at the end of the period."),
            a=_money(aum),
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "The largest contributor was {c1}, helped by {d1}, while {c2} detracted because of {d2}.",
                "{c1} added most to returns on {d1}; {c2} was the main detractor amid {d2}.",
            ),
            c1=c1.short,
            d1=rng.choice(c1.sector.up),
            c2=c2.short,
            d2=rng.choice(c2.sector.down),
        ),
        _say(
            rng,
            ("We {v} our position in {s} during the quarter.", "The managers {v} exposure to {s}."),
            v=rng.choice(("increased", "reduced", "maintained")),
            s=rng.choice(_SECTORS).name,
        ),
    ]
    extra = [
        _say(
            rng,
            ("Portfolio manager {p} said valuations in {s} look {w}.", "Looking ahead, {p} expects {w2}."),
            p=_person(rng),
            s=rng.choice(_SECTORS).name,
            w=rng.choice(("attractive", "stretched", "fair")),
            w2=rng.choice(("slower economic growth", "lower interest rates", "higher volatility")),
        ),
        "Past performance is not a guarantee of future results. Returns are shown net of fees.",
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _commodities(rng: random.Random) -> _Doc:
    day = rng.choice(_WEEKDAYS)
    items = (
        ("Crude oil", "a barrel", 25, 120),
        ("Natural gas", "per million British thermal units", 1.5, 9),
        ("Gold", "an ounce", 1100, 2600),
        ("Copper", "a metric ton", 4500, 11000),
        ("Wheat", "a bushel", 4, 12),
        ("Silver", "an ounce", 12, 32),
    )
    picks = rng.sample(items, 3)
    lines = []
    for name, unit, lo, hi in picks:
        prev = round(rng.uniform(lo, hi), 2)
        c = round(_growth(rng, -4.0, 4.0, 0.1), 1)
        new = round(prev * (1 + c / 100), 2)
        lines.append(
            _say(
                rng,
                ("{n} {mv} to {p} {u}.", "{n} settled at {p} {u}, {ud} from {q}."),
                n=name,
                mv=_move(rng, c),
                ud=_updown(c),
                p=_usd(new),
                u=unit,
                q=_usd(prev),
            )
        )
    dxy = round(rng.uniform(85, 115), 2)
    dc = round(_growth(rng, -0.9, 0.9, 0.1), 1)
    head = _say(
        rng,
        ("Commodities: {n} {d} on {day}", "Markets wrap: {n} and the dollar"),
        n=picks[0][0].lower(),
        d=rng.choice(("moves", "swings", "in focus")),
        day=day,
    )
    p1 = [
        _say(
            rng,
            ("Commodity markets were {w} on {day}.", "Trading in raw materials was {w} on {day}."),
            w=rng.choice(("mixed", "volatile", "quiet")),
            day=day,
        )
    ] + lines
    p2 = [
        _say(
            rng,
            (
                "The dollar index {mv} to {v:.2f}.",
                "The dollar {mv} against a basket of currencies, with the index at {v:.2f}.",
            ),
            mv=_move(rng, dc),
            v=dxy * (1 + dc / 100),
        ),
        _say(
            rng,
            ("Traders pointed to {r}.", "Analysts at {b} cited {r}."),
            b=_broker(rng),
            r=rng.choice(
                (
                    "supply disruptions",
                    "weaker demand from China",
                    "inventory data",
                    "central bank policy expectations",
                    "a stronger dollar",
                )
            ),
        ),
    ]
    extra = [
        _say(
            rng,
            ("Inventories {w} by {n} million barrels last week.", "Speculative positions {w2} for a {o} week."),
            w=rng.choice(("rose", "fell")),
            n=round(rng.uniform(0.5, 6), 1),
            w2=rng.choice(("increased", "decreased")),
            o=rng.choice(("second", "third", "fourth")),
        )
    ]
    return head, [" ".join(p1), " ".join(p2)], extra


def _bank_capital(rng: random.Random) -> _Doc:
    co = _company(rng, _SECTORS[0])
    year = rng.randint(2015, 2025)
    rwa = _round_m(co.revenue_m * rng.uniform(8, 14))
    cet1 = round(rng.uniform(9.5, 15.5), 1)
    cap = _round_m(rwa * cet1 / 100)
    req = round(rng.uniform(7.0, 10.5), 1)
    stress_min = round(cet1 - rng.uniform(1.0, 4.5), 1)
    loans = _round_m(rwa * rng.uniform(0.7, 1.1))
    deposits = _round_m(loans / rng.uniform(0.65, 1.0))
    nim = round(rng.uniform(1.8, 3.8), 2)
    head = _say(
        rng,
        ("{short} CET1 ratio at {c}% as of Q{q}", "{short} passes stress test with {m}% minimum"),
        short=co.short,
        c=cet1,
        q=rng.randint(1, 4),
        m=stress_min,
    )
    p1 = [
        _say(
            rng,
            (
                "{name} reported a common equity tier 1 ratio of {c}% at the end of {y}, with CET1 capital of "
                "{cap} against risk-weighted assets of {rwa}.",
                "CET1 capital of {cap} on {rwa} of risk-weighted assets gave {name} a ratio of {c}% at year-end {y}.",
            ),
            name=co.name,
            c=cet1,
            y=year,
            cap=_money(cap),
            rwa=_money(rwa),
        ),
        _say(
            rng,
            (
                "That is {b} basis points above its regulatory requirement of {r}%.",
                "The buffer over the {r}% requirement is {b} basis points.",
            ),
            b=round((cet1 - req) * 100),
            r=req,
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "In the regulator's severely adverse scenario, the ratio would fall to a minimum of {m}%, a "
                "decline of {d} basis points.",
                "Under the stress test, CET1 bottoms at {m}%, {d} basis points below the starting level.",
            ),
            m=stress_min,
            d=round((cet1 - stress_min) * 100),
        ),
        _say(
            rng,
            (
                "Loans totaled {l} and deposits {d}, a loan-to-deposit ratio of {r}.",
                "With {l} of loans and {d} of deposits, the loan-to-deposit ratio was {r}.",
            ),
            l=_money(loans),
            d=_money(deposits),
            r=_pct(loans / deposits * 100),
        ),
        _say(rng, ("Net interest margin was {n}%.", "The net interest margin stood at {n}%."), n=nim),
    ]
    extra = [
        _say(
            rng,
            ("The bank said it would {a}.", "Management plans to {a}."),
            a=rng.choice(
                (
                    "resume share buybacks",
                    "maintain its dividend",
                    "build capital further",
                    "reduce exposure to commercial real estate",
                )
            ),
        ),
        _about(rng, co),
    ]
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
    head = _say(
        rng,
        ("Credit weekly: high-yield spreads {w}", "Corporate bond market review, week {n} of {y}"),
        w="widen" if dhy > 0 else "tighten",
        n=rng.randint(2, 51),
        y=year,
    )

    def mv(d: int) -> str:
        return f"widened {d} basis points" if d > 0 else f"tightened {-d} basis points" if d < 0 else "were flat"

    p1 = [
        _say(
            rng,
            (
                "High-yield bond spreads {m} this week to {n} basis points over Treasuries.",
                "The average junk bond spread {m}, ending the week at {n} basis points.",
            ),
            m=mv(dhy),
            n=hy + dhy,
        ),
        _say(
            rng,
            ("Investment-grade spreads {m} to {n} basis points.", "High-grade spreads {m}, to {n} basis points."),
            m=mv(dig),
            n=ig + dig,
        ),
        _say(
            rng,
            (
                "Companies sold {i} of bonds, bringing issuance for the year to {y}.",
                "New issuance of {i} lifted the year-to-date total to {y}.",
            ),
            i=_money(iss * 1000),
            y=_money((prior_ytd + iss) * 1000),
        ),
    ]
    p2 = [
        _say(
            rng,
            (
                "The trailing 12-month default rate is {d}%, according to {a}.",
                "{a} puts the 12-month default rate at {d}%.",
            ),
            d=dr,
            a=rng.choice(_AGENCIES),
        ),
        _say(
            rng,
            ("{k} funds reported {f} of {n}.", "{k} funds saw {f} of {n} in the week."),
            k=rng.choice(("High-yield bond", "Investment-grade bond", "Leveraged loan")),
            f=rng.choice(("inflows", "outflows")),
            n=_money(rng.uniform(150, 4000)),
        ),
    ]
    extra = [
        _say(
            rng,
            ("Strategists at {b} expect spreads to {w} as {r}.", "{b} recommends {s} given {r}."),
            b=_broker(rng),
            w=rng.choice(("tighten", "widen", "stay range-bound")),
            s=rng.choice(("moving up in quality", "adding duration", "favoring shorter maturities")),
            r=rng.choice(("default rates rise", "supply stays light", "growth slows", "yields attract buyers")),
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
    head = _say(
        rng,
        ("{short} to cut {n:,} jobs", "{short} announces restructuring, {p}% of staff affected"),
        short=co.short,
        n=cut,
        p=p,
    )
    p1 = [
        _say(
            rng,
            (
                "{name} will eliminate about {n:,} jobs, or {p}% of its workforce of {e:,}, as part of a "
                "restructuring plan.",
                "{name} said it plans to cut roughly {n:,} positions, {p}% of its {e:,} employees.",
            ),
            name=co.name,
            n=cut,
            p=p,
            e=co.employees,
        ),
        _say(
            rng,
            (
                "The company expects pre-tax charges of about {c}, mostly severance, and annual savings of {s} by {y}.",
                "Restructuring charges are estimated at {c}; the plan should save {s} a year by {y}.",
            ),
            c=_money(charge),
            s=_money(savings),
            y=year + 1,
        ),
    ]
    p2 = [
        _say(
            rng,
            ("The move follows {d}.", "{short} has been hurt by {d}."),
            short=co.short,
            d=rng.choice(co.sector.down),
        ),
        _say(
            rng,
            (
                '"These are difficult decisions," said {ceo}, "but necessary to protect our margins."',
                "{ceo}, chief executive, said the plan will simplify the organization.",
            ),
            ceo=co.ceo,
        ),
    ]
    extra = [
        _say(
            rng,
            ("The {s} division will be most affected.", "Most of the reductions will come in {s}."),
            s=rng.choice(co.sector.segments),
        ),
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
    sector = rng.choice(_SECTORS)
    return _say(
        rng,
        (
            "The backdrop remains {mood}. Investors are weighing {a} against {b}, and many expect volatility to "
            "stay {vol} in the coming months.",
            "Across the {sector} sector, companies have reported {a2} in recent weeks. Analysts say {b2} will be "
            "the main theme for the rest of the year.",
            "Market participants noted that recent trading has been dominated by {a}. Some strategists argue that {b} "
            "will matter more for valuations over a longer horizon.",
        ),
        mood=rng.choice(("uncertain", "supportive", "challenging", "mixed")),
        a=rng.choice(("slowing growth", "sticky inflation", "higher interest rates", "strong corporate earnings")),
        b=rng.choice(("the outlook for monetary policy", "credit conditions", "consumer demand", "energy prices")),
        vol=rng.choice(("elevated", "low", "near recent levels")),
        sector=sector.name,
        a2=rng.choice(sector.up + sector.down),
        b2=rng.choice(("cost control", "pricing power", "balance sheet strength", "capital spending")),
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
`jaxfin/data/demo_corpus.py` from hand-written templates whose slots (company names, tickers, quarters,
amounts, ratings, basis points, ...) are filled by `random.Random(seed)`. All companies, people, brokers,
rating agencies, central banks, countries and indexes are fictional; any resemblance is coincidental.

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

Regenerate (byte-identical jsonl; `tests/test_demo_corpus.py` checks this):

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
            cmd=f"python -m jaxfin.data.demo_corpus --out {out.name} --n-train {n_train} --n-dev {n_dev} "
            f"--vocab-size {vocab_size} --seed {seed}",
        ),
        encoding="ascii",
    )
    return stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m jaxfin.data.demo_corpus",
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
