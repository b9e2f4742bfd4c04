"""Word tables and sentence templates of the demo corpus: data only, drawn from by ``generate.py``.

Every table a draw picks from is a tuple (not a set or dict), so ``rng.choice`` sees the same order on every
Python build; the few dicts here are only indexed by key. Templates are ``str.format`` strings whose slots are
filled by keyword in ``generate.py``; each template tuple holds alternative phrasings of one sentence. Editing,
adding, removing or reordering any entry changes the generated corpus, so the shipped ``demo_data/`` would no longer
regenerate byte for byte: regenerate it in the same change (see ``demo_data/SOURCE.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------
# Vocabulary shared by all document types: sectors, names, places, calendar, ratings.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sector:
    name: str
    suffixes: tuple[str, ...]  # words that make a company name sound like it belongs to the sector
    segments: tuple[str, ...]  # business segments, used for revenue breakdowns
    up: tuple[str, ...]  # reasons results improve
    down: tuple[str, ...]  # reasons results deteriorate
    risks: tuple[str, ...]  # risk-factor phrases for disclosures
    margin: tuple[float, float]  # plausible net margin range


SECTORS = (
    Sector(
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
    Sector(
        "insurance",
        ("Insurance", "Assurance", "Mutual"),
        ("property and casualty", "life and annuities", "specialty lines", "reinsurance"),
        ("favorable underwriting results", "higher premium rates", "stronger investment income"),
        ("elevated catastrophe losses", "adverse reserve development", "lower investment income"),
        ("catastrophe losses could exceed our estimates", "our loss reserves may prove inadequate"),
        (0.05, 0.15),
    ),
    Sector(
        "semiconductors",
        ("Semiconductor", "Micro", "Silicon"),
        ("data center", "automotive", "mobile", "industrial"),
        ("strong data center demand", "higher average selling prices", "new product ramps"),
        ("an inventory correction at customers", "weaker smartphone demand", "lower memory prices"),
        ("we depend on a small number of third-party foundries", "the semiconductor industry is highly cyclical"),
        (0.10, 0.30),
    ),
    Sector(
        "software",
        ("Software", "Systems", "Cloud"),
        ("subscription", "professional services", "maintenance", "platform"),
        ("growth in subscription revenue", "higher net retention", "new enterprise customers"),
        ("longer sales cycles", "higher customer churn", "weaker spending by small businesses"),
        ("security breaches could harm our reputation", "we may fail to retain existing customers"),
        (0.08, 0.25),
    ),
    Sector(
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
    Sector(
        "utilities",
        ("Power", "Utilities", "Electric"),
        ("regulated electric", "natural gas distribution", "renewables", "transmission"),
        ("new customer rates", "higher electricity sales", "growth in the regulated rate base"),
        ("milder weather", "higher financing costs", "storm restoration costs"),
        ("regulators may not approve rate increases we request", "severe weather could damage our assets"),
        (0.08, 0.15),
    ),
    Sector(
        "retail",
        ("Stores", "Retail", "Brands"),
        ("stores", "e-commerce", "wholesale", "international"),
        ("higher comparable store sales", "strong online demand", "fewer markdowns"),
        ("lower store traffic", "higher freight costs", "heavier promotional activity"),
        ("changes in consumer spending could reduce our sales", "we may not manage inventory effectively"),
        (0.02, 0.08),
    ),
    Sector(
        "pharmaceuticals",
        ("Pharmaceuticals", "Therapeutics", "Biosciences"),
        ("oncology", "immunology", "vaccines", "generics"),
        ("strong sales of its oncology portfolio", "new product launches", "higher prescription volumes"),
        ("generic competition", "lower vaccine sales", "pricing pressure in the United States"),
        ("clinical trials may fail to demonstrate safety or efficacy", "we face patent expirations on key products"),
        (0.10, 0.30),
    ),
    Sector(
        "industrials",
        ("Industries", "Machinery", "Manufacturing"),
        ("aerospace", "building products", "industrial automation", "power equipment"),
        ("higher pricing", "strong aftermarket demand", "productivity gains"),
        ("supply chain disruptions", "higher raw material costs", "lower volumes in Europe"),
        ("disruptions at our suppliers could delay deliveries", "we may not pass on higher input costs"),
        (0.06, 0.14),
    ),
    Sector(
        "transportation",
        ("Logistics", "Freight", "Airlines"),
        ("truckload", "intermodal", "air cargo", "passenger"),
        ("higher freight rates", "stronger passenger demand", "lower fuel costs"),
        ("lower shipment volumes", "higher fuel costs", "labor cost inflation"),
        ("fuel price volatility could reduce our margins", "labor disputes could disrupt our operations"),
        (0.03, 0.10),
    ),
    Sector(
        "real estate",
        ("Properties", "Realty", "Estates"),
        ("office", "industrial", "residential", "retail centers"),
        ("higher occupancy", "rent increases on lease renewals", "contributions from new developments"),
        ("lower office occupancy", "higher interest expense", "tenant bankruptcies"),
        ("rising interest rates could reduce property values", "tenants may fail to renew their leases"),
        (0.10, 0.35),
    ),
    Sector(
        "telecommunications",
        ("Telecom", "Communications", "Networks"),
        ("wireless", "broadband", "enterprise", "wholesale"),
        ("growth in wireless subscribers", "higher broadband pricing", "fiber expansion"),
        ("subscriber losses", "competitive pricing", "declines in legacy voice services"),
        ("we require significant capital spending to maintain our networks", "spectrum may be costly to acquire"),
        (0.06, 0.16),
    ),
    Sector(
        "consumer staples",
        ("Foods", "Beverages", "Household"),
        ("snacks", "beverages", "personal care", "home care"),
        ("price increases", "favorable product mix", "volume growth in emerging markets"),
        ("lower volumes", "commodity cost inflation", "unfavorable currency movements"),
        ("commodity price increases could reduce our margins", "retailer consolidation could weaken our pricing power"),
        (0.07, 0.15),
    ),
    Sector(
        "mining",
        ("Mining", "Metals", "Minerals"),
        ("copper", "gold", "iron ore", "lithium"),
        ("higher copper prices", "record gold production", "lower unit costs"),
        ("lower iron ore prices", "grade declines at key mines", "higher energy costs"),
        ("commodity prices are volatile and outside our control", "we face permitting risk at new mines"),
        (0.08, 0.25),
    ),
    Sector(
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

NAME_HEADS = (
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
LEGAL_FORMS = ("Inc.", "Corp.", "Holdings", "Group", "plc", "Co.")
FIRST_NAMES = (
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
LAST_NAMES = (
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
CITIES = (
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
BROKER_HEADS = ("Halvorsen", "Whitcombe", "Brandt", "Castellan", "Redfield", "Lindqvist", "Marlowe", "Ashby")
BROKER_TAILS = ("Securities", "Capital Markets", "& Company", "Research", "Partners")
RATING_AGENCIES = ("Meridian Ratings", "Northstar Credit Ratings", "Atlas Ratings Service", "Keel Credit Research")
DATA_FIRMS = ("MarketPulse", "Consensus Metrics", "StreetView Data", "Ledgerline")
RATING_SCALE = (
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
MONTHS = (
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
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
ORDINALS = ("first", "second", "third", "fourth")
# (country, central bank, committee, policy rate name, currency)
ECONOMIES = (
    ("Norland", "the Central Bank of Norland", "Monetary Policy Committee", "policy rate", "krone"),
    ("Astoria", "the Reserve Bank of Astoria", "Rate Setting Board", "cash rate", "astor"),
    ("Caldera", "the National Bank of Caldera", "Monetary Council", "benchmark lending rate", "peso"),
    ("Westmark", "the Westmark Monetary Authority", "Policy Board", "overnight rate", "mark"),
    ("Eastland", "the Bank of Eastland", "Monetary Policy Board", "base rate", "pound"),
    ("Valdoria", "the Federal Reserve Board of Valdoria", "Open Market Committee", "federal funds rate", "dollar"),
)
EXCHANGES = ("NYSE", "Nasdaq")
INDEXES = ("Composite 500", "Industrial 30", "Technology 100", "Small Cap 2000")
UP_VERBS = ("rose", "increased", "grew", "climbed")
DOWN_VERBS = ("fell", "declined", "decreased", "dropped")


# ---------------------------------------------------------------------------------------------------------
# Paragraphs shared by all document types: company boilerplate, forward-looking statement, market
# backdrop (added only to lift a short document over the minimum length).
# ---------------------------------------------------------------------------------------------------------

ABOUT = (
    "{name} is {a_sector} company headquartered in {city}. It employs about {emp:,} people and "
    "reported annual revenue of {rev}.",
    "About {short}: {name}, based in {city}, operates in the {sector} industry with approximately "
    "{emp:,} employees. Its shares trade on the {ex} under the symbol {ticker}.",
    "{short} was founded in {city} and is one of the larger {sector} companies in its region, with "
    "{emp:,} employees and {rev} in annual revenue.",
)
FORWARD_LOOKING = (
    "This release contains forward-looking statements that involve risks and uncertainties. Actual "
    "results may differ materially from those expressed or implied. {short} undertakes no obligation "
    "to update any forward-looking statement.",
    "Certain statements in this announcement are forward-looking and are based on current "
    "expectations of {short} management. They are subject to risks, including those described in "
    "the company's annual report, that could cause actual results to differ materially.",
    "Forward-looking statements speak only as of the date they are made. Investors should not place "
    "undue reliance on them, because actual results of {short} could differ materially.",
)
CONTEXT = (
    "The backdrop remains {mood}. Investors are weighing {a} against {b}, and many expect volatility to "
    "stay {vol} in the coming months.",
    "Across the {sector} sector, companies have reported {a2} in recent weeks. Analysts say {b2} will be "
    "the main theme for the rest of the year.",
    "Market participants noted that recent trading has been dominated by {a}. Some strategists argue that {b} "
    "will matter more for valuations over a longer horizon.",
)
CONTEXT_MOODS = ("uncertain", "supportive", "challenging", "mixed")
CONTEXT_THEMES = ("slowing growth", "sticky inflation", "higher interest rates", "strong corporate earnings")
CONTEXT_COUNTERWEIGHTS = ("the outlook for monetary policy", "credit conditions", "consumer demand", "energy prices")
CONTEXT_VOLATILITY = ("elevated", "low", "near recent levels")
CONTEXT_FOCUS = ("cost control", "pricing power", "balance sheet strength", "capital spending")

# ---------------------------------------------------------------------------------------------------------
# Document types, in ``generate.DOC_TYPES`` order. Each section names its prefix; names read
# <PREFIX>_<what the sentence says>, and ``<PREFIX>_HEAD`` is the headline.
# ---------------------------------------------------------------------------------------------------------

# quarterly_earnings (EARNINGS_*)
EARNINGS_HEAD = (
    "{short} ({ticker}) reports {qn} {year} results",
    "{short} {qshort} {year}: revenue {mv}",
    "{short} {verdict} estimates as {qshort} revenue reaches {rev}",
)
EARNINGS_REPORTED = (
    "{name} ({ex}: {ticker}) reported results for the {qn} of fiscal {year} on {day}.",
    "{name} on {day} announced financial results for its fiscal {year} {qn}.",
)
EARNINGS_REVENUE = (
    "Revenue {mv} to {cur} from {prev} in the same quarter a year earlier.",
    "Total revenue {mv} year over year to {cur}, compared with {prev} a year ago.",
    "Quarterly revenue was {cur}, which {mv} from {prev} in the prior-year period.",
)
EARNINGS_NET_INCOME = (
    "Net income was {ni}, or {eps} per diluted share, compared with {peps} per share a year earlier.",
    "The company earned {ni}, or {eps} a share, versus {peps} a share in the year-ago quarter.",
)
EARNINGS_CONSENSUS = (
    "Analysts polled by {firm} had expected {est} per share.",
    "That {bm} the consensus estimate of {est} per share compiled by {firm}.",
)
EARNINGS_SEGMENTS = (
    "The {a} segment contributed {sa}, about {share}% of the total, while {b} accounted for the remaining {sb}.",
    "By segment, {a} revenue was {sa} and {b} revenue was {sb}.",
)
EARNINGS_OPERATING_MARGIN = (
    "Operating income was {op}, giving an operating margin of {m}, compared with {pm} a year earlier.",
    "Operating margin was {m} on operating income of {op}, versus {pm} in the prior-year quarter.",
)
EARNINGS_CEO_QUOTE = (
    '"We delivered a solid quarter and continued to invest in {a}," said {ceo}, chief executive officer.',
    '"Our teams executed well despite {d}," {ceo}, the chief executive, said in a statement.',
    '"{qn_cap} results show the strength of our {a} franchise," said {ceo}.',
)
EARNINGS_CFO = (
    "Chief financial officer {cfo} said the balance sheet remains strong.",
    "{cfo}, the finance chief, said cost discipline would remain a priority.",
)
EARNINGS_GUIDANCE = (
    "For fiscal {ny}, {short} expects revenue of {lo} to {hi}.",
    "The company guided fiscal {ny} revenue to a range of {lo} to {hi}.",
)
EARNINGS_AFTER_HOURS = ("Shares {mv} in after-hours trading.", "The stock {mv} in extended trading.")
EARNINGS_DRIVERS_UP = (
    "The {dir} reflected {d1} and {d2}.",
    "Management attributed the {dir} to {d1}, partly offset by {d2}.",
)
EARNINGS_DRIVERS_DOWN = ("The {dir} reflected {d1} and {d2}.", "Management attributed the {dir} to {d1} and {d2}.")

# annual_results (ANNUAL_*)
ANNUAL_HEAD = ("{short} full-year {year} results", "{short} posts fiscal {year} revenue of {rev}")
ANNUAL_REVENUE = (
    "{name} reported full-year {year} revenue of {cur}, {ud} from {prev} in {py}.",
    "For fiscal {year}, {name} said revenue {mv} to {cur} from {prev}.",
)
ANNUAL_NET_INCOME = (
    "Net income {mv} to {ni}, or {eps} per share.",
    "Annual net income was {ni} ({eps} per share), which {mv} from {pni}.",
)
ANNUAL_FREE_CASH_FLOW = (
    "Free cash flow was {fcf} after capital expenditures of {capex}.",
    "The company generated {fcf} of free cash flow and spent {capex} on capital projects.",
)
ANNUAL_DIVIDEND = (
    "The board proposed a total dividend of {dps} per share for the year, a payout ratio of "
    "about {payout}% of earnings.",
    "Shareholders will receive dividends of {dps} per share, equal to roughly {payout}% of earnings per share.",
)
ANNUAL_CEO = (
    "{ceo}, chief executive, said {year} was a year of {word} for {short}.",
    "Chief executive {ceo} described the year as one of {word}.",
)
ANNUAL_YEAR_THEMES = ("disciplined execution", "transition", "record growth", "investment")
ANNUAL_SEGMENT = (
    "The {a} business was the main contributor, helped by {d}.",
    "Results in {a} benefited from {d}, while {b} was weaker.",
)

# guidance_update (GUIDANCE_*)
GUIDANCE_HEAD = ("{short} {v} full-year outlook", "{short} {v} {year} revenue forecast")
GUIDANCE_RANGE = (
    "{name} {v} its full-year {year} revenue forecast to {nl} to {nh}, from {ol} to {oh} previously.",
    "{name} said it now expects {year} revenue of {nl} to {nh}, {cmp} its earlier range of {ol} to {oh}.",
)
GUIDANCE_MIDPOINT = (
    "At the midpoint, the new outlook is {c} {dir} than before.",
    "The midpoint of the range moves {c} {dir}.",
)
GUIDANCE_REASON = ("The company cited {d}.", "{short} pointed to {d} as the main reason.")
GUIDANCE_SHARES = ("Shares {mv} to {p} in {session} trading.", "The stock {mv} to close at {p}.")
GUIDANCE_SESSIONS = ("early", "afternoon", "premarket")
GUIDANCE_CFO_QUOTE = ('"{q}," said chief financial officer {cfo}.', '"{q}," {cfo}, the CFO, told analysts.')
GUIDANCE_ANALYST = (
    "{b} analyst {a} said the {w} had been {e} by investors.",
    "According to {a} of {b}, the revision was {e}.",
)
GUIDANCE_REACTIONS = ("largely expected by investors", "a surprise to investors", "widely anticipated")
GUIDANCE_RAISE_QUOTE = "Demand has been stronger than we planned for"
GUIDANCE_CUT_QUOTE = "We are taking a more cautious view of the second half"

# central_bank (CB_*)
CB_HEAD_MOVE = ("{b} {a} {rate} by {n} bp to {new:.2f}%", "{c} central bank {a2} rates to {new:.2f}%")
CB_HEAD_HOLD = ("{b} holds {rate} at {new:.2f}%", "{c} central bank keeps rates on hold")
CB_MOVE = (
    "{bank_cap} {a} its {rate} by {n} basis points to {new:.2f}% at its {month} meeting.",
    "At its {month} {year} meeting, the {committee} of {bank} {a} the {rate} by {n} "
    "basis points, taking it from {old:.2f}% to {new:.2f}%.",
)
CB_HOLD = (
    "{bank_cap} left its {rate} unchanged at {new:.2f}% at its {month} meeting.",
    "The {committee} of {bank} held the {rate} at {new:.2f}% in {month} {year}.",
)
CB_INFLATION = (
    "Annual inflation was {i}% in the latest reading, {g} the {t:.0f}% target.",
    "Consumer price inflation stood at {i}%, {g} the bank's {t:.0f}% goal.",
)
CB_STATEMENT = ("The statement said {s}.", "Policymakers noted that {s}.")
CB_OBSERVATIONS = (
    "the labor market remains tight",
    "growth in household spending has slowed",
    "wage growth has moderated",
    "credit conditions have tightened",
    "business investment remains subdued",
)
CB_GROWTH_FORECAST = (
    "The bank now projects economic growth of {n}% in {year}, {r} from {o}%.",
    "Staff forecasts for {year} GDP growth were {r} to {n}% from {o}%.",
)
CB_GOVERNOR = (
    "{gov}, the governor, said further {w} would depend on incoming data.",
    "Governor {gov} told reporters that the {committee} stands ready to {w2} if needed.",
)
CB_NEXT_STEPS = ("tightening", "easing", "adjustments")
CB_READY_TO = ("act", "adjust policy")
CB_BALANCE_SHEET = (
    "The bank will continue to reduce its bond holdings by {n} billion {cur}s a month.",
    "Balance sheet run-off will continue at a pace of {n} billion {cur}s per month.",
)
CB_MARKET_REACTION = (
    "The two-year government bond yield {mv} basis points to {y:.2f}% after the announcement, "
    "and the {cur} {fx} against the dollar.",
    "Markets reacted {how}: two-year yields moved {mv} basis points to {y:.2f}%.",
)
CB_FX_MOVES = ("strengthened", "weakened")
CB_REACTION_MOODS = ("calmly", "sharply")
CB_VOTE_UNANIMOUS = "The decision was unanimous."
CB_VOTE_SPLIT_MOVE = "The {committee} voted {yes} to {no}, with the minority preferring a smaller move."
CB_VOTE_SPLIT_HOLD = "The {committee} voted {yes} to {no}, with the minority preferring a change in rates."

# rating_action (RATING_*)
RATING_KINDS = ("upgrade", "downgrade", "affirm")
RATING_HEAD = ("{agency} {v} {short} {prep} {new}", "{short} rating {v2} at {agency}")
RATING_AFFIRM = (
    "{agency} affirmed the {r} long-term issuer rating of {name}. The outlook is {o}.",
    "{agency} said it affirmed {name} at {r} with a {o} outlook.",
)
RATING_CHANGE = (
    "{agency} {v} the long-term issuer rating of {name} by {n} to {new} from {old}. The outlook is {o}.",
    "{agency} on {day} {v} {name} to {new} from {old}, a move of {n}. It assigned a {o} outlook.",
)
RATING_LEVERAGE = (
    "Leverage, measured as debt to EBITDA, {m} to {n:.1f} times from {o:.1f} times, with total "
    "debt of {debt} against EBITDA of {e}.",
    "The agency estimates debt of {debt} and EBITDA of "
    "{e}, or leverage of {n:.1f} times, compared with {o:.1f} times a year earlier.",
)
RATING_REASON = ("The action reflects {d}.", "{agency} said the rating reflects {d}.")
RATING_TRIGGERS = (
    "The rating could be lowered if leverage rose above {t:.1f} times on a sustained basis. It "
    "could be raised if leverage fell below {u:.1f} times.",
    "Factors that could lead to a downgrade include leverage above {t:.1f} times through {y}.",
)
RATING_DEBT_AFFECTED = (
    "About {d} of senior unsecured notes are affected by the action.",
    "The rating applies to {d} of outstanding senior debt.",
)
RATING_OUTLOOKS = {
    "upgrade": ("stable", "stable", "positive"),
    "downgrade": ("stable", "stable", "negative"),
    "affirm": ("stable", "stable", "positive", "negative"),
}
RATING_FALLEN_ANGEL = "The action moves the company below investment grade, making it a so-called fallen angel."
RATING_BACK_TO_INVESTMENT_GRADE = "The upgrade returns the company to investment grade."

# bond_issue (BOND_*)
BOND_HEAD = ("{short} prices {size} of {t}-year notes", "New issue: {short} {t}-year bonds at T+{s}")
BOND_SOLD = (
    "{name}, rated {r}, sold {size} of senior unsecured notes due {m} on {day}.",
    "{name} ({r}) priced a {size} offering of {t}-year senior notes maturing in {m}.",
)
BOND_COUPON = (
    "The notes pay a coupon of {c:.3f}% and were priced at par, a spread of {s} basis points over "
    "the {t}-year Treasury yield of {u:.3f}%.",
    "Priced at par with a {c:.3f}% coupon, the bonds came {s} basis points over Treasuries, which yielded {u:.3f}%.",
)
BOND_PRICE_TALK = (
    "Initial price talk was around {ipt} basis points, so the deal tightened by {d} basis points.",
    "Pricing tightened {d} basis points from initial talk of {ipt} basis points over.",
)
BOND_ORDER_BOOK = (
    "The order book peaked at {book}, or {c:.1f} times the amount offered.",
    "Investors placed orders of {book}, covering the deal {c:.1f} times.",
)
BOND_PROCEEDS = ("Proceeds will be used to {u}.", "{short} plans to use the proceeds to {u}.")
BOND_USES = (
    "refinance existing debt",
    "fund an acquisition",
    "repay borrowings under its revolving credit facility",
    "fund capital expenditures",
    "for general corporate purposes",
)
BOND_BOOKRUNNERS = ("{b1} and {b2} were joint bookrunners.", "The deal was led by {b1}, with {b2} as co-manager.")
BOND_INTEREST = (
    "Annual interest on the notes will be about {i}.",
    "The coupon implies annual interest expense of roughly {i}.",
)

# loan_market (LOAN_*)
LOAN_HEAD = ("{short} reprices {size} term loan at {ref} plus {n}", "Loan market: {short} trims margin by {cut} bp")
LOAN_REPRICED = (
    "{name} repriced its {size} term loan B to {ref} plus {n} basis points from {ref} plus {o}.",
    "Lenders agreed to cut the margin on {name_s} {size} term loan by {cut} basis points, to {ref} plus {n}.",
)
LOAN_SAVINGS = (
    "The {cut} basis point reduction saves the company about {s} of interest a year.",
    "At {cut} basis points on {size}, annual interest savings come to roughly {s}.",
)
LOAN_DISCOUNT = (
    "The loan was offered at {oid} cents on the dollar with a {f}% {ref} floor.",
    "Pricing included an original issue discount of {disc} points and a {f}% floor.",
)
LOAN_FLOORS = ("0.50", "0.75", "0")
LOAN_LEVERAGE = (
    "Pro forma leverage is about {l:.1f} times, and the loan matures in {m}.",
    "The borrower's net leverage stands near {l:.1f} times; the facility matures in {m}.",
)
LOAN_ARRANGER = ("{b} is the lead arranger.", "The transaction is being arranged by {b}.")
LOAN_DEMAND = ("Repricings have been common as {w}.", "Arrangers said demand from {w2} remains strong.")
LOAN_REPRICING_REASONS = ("loan prices trade above par", "investor demand outpaces new supply")
LOAN_BUYERS = ("collateralized loan obligations", "loan mutual funds", "private credit funds")

# analyst_note (ANALYST_*)
ANALYST_VIEWS = ("positive", "positive", "neutral", "negative")
ANALYST_ACTIONS = ("initiated coverage of", "resumed coverage of", "reiterated its view on")
ANALYST_HEAD = ("{broker} {a} {short} at {r}, target {pt}", "{short}: {r} rating, {pt} target from {broker}")
ANALYST_COVERAGE = (
    "{broker} {action} {name} ({ticker}) with {r} rating and a price target of {pt}.",
    "Analyst {an} of {broker} {action} {short} with {r} rating and a {pt} price target.",
)
ANALYST_UPSIDE = (
    "The target implies {u} {d} from the last close of {p}.",
    "Against the closing price of {p}, that is {u} of {d}.",
)
ANALYST_VALUATION = (
    "The target is based on {pe:.1f} times estimated {y} earnings of {e2} per share.",
    "{broker} values the stock at {pe:.1f} times {y} earnings per share, which it forecasts at {e2}.",
)
ANALYST_FORECAST = (
    "The firm forecasts earnings per share of {e1} in {y0} and {e2} in {y1}, growth of {g}.",
    "{broker} expects earnings per share to grow {g} from {e1} in {y0} to {e2} in {y1}.",
)
ANALYST_DRIVER = ("The analyst highlighted {d} as a key driver.", "{broker} sees {d} as the main {w}.")
ANALYST_RISKS = ("Risks to the view include {r}.", "Key risks: {r}.")
ANALYST_CONSENSUS = (
    "Of the {n} analysts covering the stock, {b} rate it a buy.",
    "{b} of {n} analysts tracked by {firm} recommend buying the shares.",
)
ANALYST_RATINGS = {
    "positive": ("buy", "overweight", "outperform"),
    "neutral": ("hold", "neutral", "equal-weight"),
    "negative": ("sell", "underweight", "underperform"),
}

# risk_disclosure (RISK_*)
RISK_HEAD = ("{name} annual report {year}: risk factors", "Risk factors and market risk disclosures - {short}")
RISK_FIRST = (
    "Our business is subject to a number of risks. In particular, {r1}.",
    "Investors should consider the following risks carefully. First, {r1}.",
)
RISK_SECOND = ("In addition, {r2}.", "We also note that {r2}.")
RISK_CUSTOMERS = (
    "Our largest customer accounted for approximately {t}% of revenue in fiscal {y}, and the loss "
    "of this customer could materially affect our results.",
    "In fiscal {y}, our ten largest customers represented {t2}% of revenue.",
)
RISK_VARIABLE_DEBT = (
    "As of December 31, {y}, we had {d} of outstanding debt, of which {v} ({p}%) bore interest at variable rates.",
    "At year-end {y}, total indebtedness was {d}; {p}% of it, or {v}, was at floating rates.",
)
RISK_RATE_SENSITIVITY = (
    "A hypothetical 100 basis point increase in interest rates would raise annual interest "
    "expense by approximately {i}.",
    "Each 100 basis point rise in rates would increase our annual interest cost by about {i}.",
)
RISK_CURRENCY = (
    "About {f}% of our revenue is earned in currencies other than the U.S. dollar. A 10% "
    "strengthening of the dollar would have reduced revenue by roughly {x}.",
    "Non-dollar revenue was {f}% of the total; a 10% stronger dollar would have lowered revenue by about {x}.",
)
RISK_REFINANCING = (
    "We may be unable to refinance our debt on acceptable terms, particularly the {m} due in {y}.",
    "Of our total debt, {m} matures in {y}, and we may need to refinance it at higher rates.",
)
RISK_OTHER = (
    "Cybersecurity incidents, changes in tax law and litigation could also adversely affect our financial "
    "condition and results of operations."
)

# dividend_buyback (DIVIDEND_*)
DIVIDEND_HEAD = ("{short} raises quarterly dividend to {d}", "{short} lifts payout {g}, adds {bb} buyback")
DIVIDEND_DECLARED = (
    "The board of {name} declared a quarterly dividend of {n} per share, up from {o}, an increase of {g}.",
    "{name} increased its quarterly dividend by {g} to {n} a share from {o}.",
)
DIVIDEND_DATES = (
    "The dividend is payable on {m} {d}, {y}, to shareholders of record on {m0} {d0}.",
    "It will be paid on {m} {d}, {y}, to holders of record as of {m0} {d0}.",
)
DIVIDEND_YIELD = (
    "On an annual basis the new dividend equals {a} per share, a yield of {y} at the current price of {p}.",
    "The annualized payout of {a} represents a {y} yield based on a share price of {p}.",
)
DIVIDEND_BUYBACK = (
    "The company also authorized a share repurchase program of up to {bb}, or about {p} of its {mc} market value.",
    "Separately, {short} approved a buyback of up to {bb}, equivalent to "
    "roughly {p} of the company's market capitalization of {mc}.",
)
DIVIDEND_QUOTE = (
    "{cfo}, chief financial officer, said the moves reflect confidence in cash generation.",
    '"We are committed to returning capital to shareholders," said {ceo}.',
)

# merger (MERGER_*)
MERGER_HEAD = ("{a} to buy {t} for {ev}", "{a} agrees {ev} deal for {t}")
MERGER_AGREED = (
    "{a} agreed to acquire {t} for {o} per share {c}, valuing its equity at {eq}.",
    "{a} said on {day} it will buy {t} at {o} a share {c}, for an equity value of {eq}.",
)
MERGER_PREMIUM = (
    "The price is a {p} premium to {t_s} last close of {c}.",
    "The offer represents a premium of {p} over the closing price of {c}.",
)
MERGER_VALUATION = (
    "Including {nd} of net debt, the enterprise value is {ev}, or {m:.1f} times {t_s} EBITDA of {e}.",
    "The deal values {t} at {ev} including net debt of {nd}, about {m:.1f} times EBITDA of {e}.",
)
MERGER_SYNERGIES = (
    "{a} expects annual cost savings of {s} by {y}.",
    "The companies target {s} of yearly synergies within two years, by {y}.",
)
MERGER_CLOSING = (
    "The transaction is expected to close in the {h} half of {y}, subject to regulatory and shareholder approval.",
    "Closing is expected in the {h} half of {y}, pending approvals.",
)
MERGER_HALVES = ("first", "second")
MERGER_ADVISERS = ("{b1} advised {a}, while {b2} advised {t}.", "{a} was advised by {b1}; {t} by {b2}.")
MERGER_QUOTE = (
    '"Combining with {t} strengthens our position in {seg}," said {ceo}, chief executive of {a}.',
    '"This is a compelling combination for both sets of shareholders," {ceo} said.',
)

# equity_wrap (WRAP_*)
WRAP_HEAD = ("Stocks {d} on {day}; {s} lead", "Market close: {i} {d2} {c:.2f}%")
WRAP_OPEN = ("Stocks {m} on {day}. {l1}.", "Equities {m} in {day} trading. {l1}.")
WRAP_SECTORS = (
    "{b} shares were the best performers, while {w} stocks lagged.",
    "Among sectors, {b2} led and {w} trailed.",
)
WRAP_MOVER = ("{name} {mv} after {r}.", "Shares of {name} {mv}, the biggest move in the index, after {r}.")
WRAP_TREASURY = (
    "The 10-year Treasury yield {m}, ending at {y:.2f}%.",
    "In bonds, the 10-year yield {m} and closed at {y:.2f}%.",
)
WRAP_FOCUS = ("Investors were focused on {f}.", "Traders said attention was on {f}.")
WRAP_FOCUS_TOPICS = (
    "the upcoming inflation report",
    "central bank commentary",
    "corporate earnings",
    "bond yields",
    "oil prices",
)
WRAP_VOLUME = (
    "About {v:.1f} billion shares changed hands, {c} the 20-day average.",
    "Volume was {v:.1f} billion shares, {c} average.",
)
WRAP_VOLUME_LEVELS = ("above", "below", "in line with")
WRAP_INDEX_LINE = "the {index} closed {d} {c:.2f}% at {level:,.2f}, a move of {pts:,.2f} points"
WRAP_REASONS_UP = (
    "strong quarterly results",
    "an analyst upgrade",
    "it raised its outlook",
    "it agreed to be acquired",
)
WRAP_REASONS_DOWN = (
    "disappointing quarterly results",
    "an analyst downgrade",
    "it cut its outlook",
    "a credit rating downgrade",
)

# economic_data (ECON_*)
ECON_HEAD = ("{c} inflation {v} {i}% in {m}", "{c} {m} data: CPI {i}%, jobs {j:+d}k")
ECON_CPI = (
    "Consumer prices in {c} rose {i}% in {m} {y} from a year earlier, after {p}% in {pm}.",
    "Annual inflation in {c} was {i}% in {m} {y}, compared with {p}% the month before.",
)
ECON_FORECAST = (
    "Economists had expected {f}%, so the reading was {cmp} forecasts.",
    "The figure was {cmp} the {f}% median forecast of economists.",
)
ECON_CORE = (
    "Core inflation, which excludes food and energy, was {k}%.",
    "Excluding volatile food and energy, prices rose {k}%.",
)
ECON_PAYROLLS = (
    "Employers {v} {j:,} jobs in {m}, {cmp} the {f:,} expected.",
    "Payrolls {v2} by {j:,} in {m}, versus forecasts of {f:,}.",
)
ECON_UNEMPLOYMENT = (
    "The unemployment rate {v} {u}% from {p}%.",
    "Unemployment was {u}%, compared with {p}% a month earlier.",
)
ECON_ECONOMISTS = (
    "Economists at {b} said the data {w} the case for {a}.",
    "{b} said the report {w} pressure on policymakers to {a2}.",
)
ECON_EFFECTS = ("strengthens", "weakens")
ECON_POLICY_CASES = ("further rate increases", "rate cuts", "a pause in policy changes")
ECON_POLICY_ACTIONS = ("raise rates", "cut rates", "stay on hold")
ECON_WAGES = ("Average hourly earnings rose {w}% from a year earlier.", "Wage growth was {w}% year over year.")

# treasury_auction (AUCTION_*)
AUCTION_HEAD = ("{c} {t}-year auction {r}", "{t}-year note sale draws {b:.2f} bid-to-cover")
AUCTION_SOLD = (
    "The {c} Treasury sold {s} of {t}-year notes at a high yield of {hy:.3f}%.",
    "{c} auctioned {s} of {t}-year debt, with a high yield of {hy:.3f}%.",
)
AUCTION_TAIL = (
    "That was {a} basis points {d} the when-issued yield of {wi:.3f}% at the bidding deadline.",
    "The when-issued yield was {wi:.3f}%, so the sale priced {a} basis points {d} it.",
)
AUCTION_BID_TO_COVER = (
    "Bids totaled {b:.2f} times the amount offered, compared with an average of {a:.2f} at the previous six sales.",
    "The bid-to-cover ratio was {b:.2f}, versus a recent average of {a:.2f}.",
)
AUCTION_ALLOTMENT = (
    "Indirect bidders, a group that includes foreign central banks, took {i}% of the notes, and "
    "direct bidders took {d}%. Primary dealers were left with the remaining {p}%.",
    "Indirects were awarded {i}%, directs {d}%, and dealers {p}%.",
)
AUCTION_DEMAND = ("Strategists described demand as {w}.", "Traders called the result {w}.")
AUCTION_SUPPLY = (
    "The sale was part of {n} of coupon supply this week.",
    "This week's auctions total {n} across maturities.",
)
AUCTION_AT_WHEN_ISSUED = "The auction priced exactly at the when-issued yield of {wi:.3f}%."

# ipo (IPO_*)
IPO_PLACES = ("above", "top", "middle", "bottom")
IPO_HEAD = ("{short} prices IPO at {p}", "{short} raises {r} in {ex} debut")
IPO_PRICED = (
    "{name} priced its initial public offering of {s} million shares at {p}, {w} marketed range of {lo} to {hi}.",
    "{name} sold {s} million shares at {p} each in its IPO, {w} {lo}-{hi} range.",
)
IPO_RAISED = (
    "The offering raised {r} and values the company at {mc} based on {o} million shares outstanding.",
    "The deal raised {r}; with {o} million shares outstanding, the market value is {mc}.",
)
IPO_OPENED = (
    "The stock opened at {op} on the {ex} under the ticker {t}, {ud} from the offer price.",
    "Trading under {t} on the {ex}, shares opened at {op}, a move of {c} versus the IPO price.",
)
IPO_COMPANY = (
    "{short}, {a_s} company based in {city}, reported revenue of {rev} in {y}.",
    "Founded in {city}, the {s} company had {rev} of revenue last year.",
)
IPO_UNDERWRITERS = ("{b1} and {b2} led the offering.", "The underwriters were led by {b1} and {b2}.")
IPO_MARKET = ("It is the {n} largest listing of {y} so far.", "The IPO market has {w} in {y}.")
IPO_RANKS = ("second", "third", "fifth", "tenth")
IPO_MARKET_STATES = ("recovered", "been slow", "picked up")
IPO_PROCEEDS = ("Proceeds will be used to {u}.", "The company plans to use the money to {u}.")
IPO_USES = ("repay debt", "expand into new markets", "fund research and development")
IPO_RANGE_PLACES = {
    "above": "above the",
    "top": "at the top of its",
    "middle": "in the middle of its",
    "bottom": "at the bottom of its",
}

# fund_commentary (FUND_*)
FUND_STYLES = (
    "Global Equity",
    "Dividend Growth",
    "Short Duration Bond",
    "High Yield",
    "Emerging Markets",
    "Small Cap Value",
    "Balanced Income",
)
FUND_HEAD = ("{f}: Q{q} {y} commentary", "{f} quarterly review, Q{q} {y}")
FUND_RETURN = (
    "The {f} returned {r:.2f}% in the {o} quarter of {y}, compared with {b:.2f}% for its benchmark, {bench}.",
    "In Q{q} {y}, the fund returned {r:.2f}% versus {b:.2f}% for {bench}.",
)
FUND_ASSETS = ("Assets under management were {a} at quarter end.", "The fund managed {a} at the end of the period.")
FUND_CONTRIBUTORS = (
    "The largest contributor was {c1}, helped by {d1}, while {c2} detracted because of {d2}.",
    "{c1} added most to returns on {d1}; {c2} was the main detractor amid {d2}.",
)
FUND_POSITIONING = ("We {v} our position in {s} during the quarter.", "The managers {v} exposure to {s}.")
FUND_POSITION_CHANGES = ("increased", "reduced", "maintained")
FUND_OUTLOOK = ("Portfolio manager {p} said valuations in {s} look {w}.", "Looking ahead, {p} expects {w2}.")
FUND_VALUATIONS = ("attractive", "stretched", "fair")
FUND_EXPECTATIONS = ("slower economic growth", "lower interest rates", "higher volatility")
FUND_OUTPERFORMED = "The fund outperformed by {bp} basis points."
FUND_UNDERPERFORMED = "The fund underperformed by {bp} basis points."
FUND_IN_LINE = "Performance was in line with the benchmark."
FUND_DISCLAIMER = "Past performance is not a guarantee of future results. Returns are shown net of fees."

# commodities (COMMOD_*, COMMODITIES)
COMMOD_PRICE = ("{n} {mv} to {p} {u}.", "{n} settled at {p} {u}, {ud} from {q}.")
COMMOD_HEAD = ("Commodities: {n} {d} on {day}", "Markets wrap: {n} and the dollar")
COMMOD_HEAD_WORDS = ("moves", "swings", "in focus")
COMMOD_OPEN = ("Commodity markets were {w} on {day}.", "Trading in raw materials was {w} on {day}.")
COMMOD_MOODS = ("mixed", "volatile", "quiet")
COMMOD_DOLLAR = (
    "The dollar index {mv} to {v:.2f}.",
    "The dollar {mv} against a basket of currencies, with the index at {v:.2f}.",
)
COMMOD_REASON = ("Traders pointed to {r}.", "Analysts at {b} cited {r}.")
COMMOD_REASONS = (
    "supply disruptions",
    "weaker demand from China",
    "inventory data",
    "central bank policy expectations",
    "a stronger dollar",
)
COMMOD_FLOWS = ("Inventories {w} by {n} million barrels last week.", "Speculative positions {w2} for a {o} week.")
COMMOD_INVENTORY_MOVES = ("rose", "fell")
COMMOD_POSITION_MOVES = ("increased", "decreased")
COMMOD_WEEKS = ("second", "third", "fourth")
# (name, price unit, low and high of the plausible price range)
COMMODITIES = (
    ("Crude oil", "a barrel", 25, 120),
    ("Natural gas", "per million British thermal units", 1.5, 9),
    ("Gold", "an ounce", 1100, 2600),
    ("Copper", "a metric ton", 4500, 11000),
    ("Wheat", "a bushel", 4, 12),
    ("Silver", "an ounce", 12, 32),
)

# bank_capital (CAPITAL_*)
CAPITAL_HEAD = ("{short} CET1 ratio at {c}% as of Q{q}", "{short} passes stress test with {m}% minimum")
CAPITAL_CET1 = (
    "{name} reported a common equity tier 1 ratio of {c}% at the end of {y}, with CET1 capital of "
    "{cap} against risk-weighted assets of {rwa}.",
    "CET1 capital of {cap} on {rwa} of risk-weighted assets gave {name} a ratio of {c}% at year-end {y}.",
)
CAPITAL_BUFFER = (
    "That is {b} basis points above its regulatory requirement of {r}%.",
    "The buffer over the {r}% requirement is {b} basis points.",
)
CAPITAL_STRESS = (
    "In the regulator's severely adverse scenario, the ratio would fall to a minimum of {m}%, a "
    "decline of {d} basis points.",
    "Under the stress test, CET1 bottoms at {m}%, {d} basis points below the starting level.",
)
CAPITAL_LOANS = (
    "Loans totaled {l} and deposits {d}, a loan-to-deposit ratio of {r}.",
    "With {l} of loans and {d} of deposits, the loan-to-deposit ratio was {r}.",
)
CAPITAL_NIM = ("Net interest margin was {n}%.", "The net interest margin stood at {n}%.")
CAPITAL_PLAN = ("The bank said it would {a}.", "Management plans to {a}.")
CAPITAL_PLANS = (
    "resume share buybacks",
    "maintain its dividend",
    "build capital further",
    "reduce exposure to commercial real estate",
)

# credit_weekly (CREDIT_*)
CREDIT_HEAD = ("Credit weekly: high-yield spreads {w}", "Corporate bond market review, week {n} of {y}")
CREDIT_HIGH_YIELD = (
    "High-yield bond spreads {m} this week to {n} basis points over Treasuries.",
    "The average junk bond spread {m}, ending the week at {n} basis points.",
)
CREDIT_INVESTMENT_GRADE = (
    "Investment-grade spreads {m} to {n} basis points.",
    "High-grade spreads {m}, to {n} basis points.",
)
CREDIT_ISSUANCE = (
    "Companies sold {i} of bonds, bringing issuance for the year to {y}.",
    "New issuance of {i} lifted the year-to-date total to {y}.",
)
CREDIT_DEFAULTS = (
    "The trailing 12-month default rate is {d}%, according to {a}.",
    "{a} puts the 12-month default rate at {d}%.",
)
CREDIT_FUNDS = ("{k} funds reported {f} of {n}.", "{k} funds saw {f} of {n} in the week.")
CREDIT_FUND_KINDS = ("High-yield bond", "Investment-grade bond", "Leveraged loan")
CREDIT_FLOWS = ("inflows", "outflows")
CREDIT_STRATEGY = ("Strategists at {b} expect spreads to {w} as {r}.", "{b} recommends {s} given {r}.")
CREDIT_SPREAD_VIEWS = ("tighten", "widen", "stay range-bound")
CREDIT_TRADES = ("moving up in quality", "adding duration", "favoring shorter maturities")
CREDIT_REASONS = ("default rates rise", "supply stays light", "growth slows", "yields attract buyers")

# restructuring (RESTRUCT_*)
RESTRUCT_HEAD = ("{short} to cut {n:,} jobs", "{short} announces restructuring, {p}% of staff affected")
RESTRUCT_CUTS = (
    "{name} will eliminate about {n:,} jobs, or {p}% of its workforce of {e:,}, as part of a restructuring plan.",
    "{name} said it plans to cut roughly {n:,} positions, {p}% of its {e:,} employees.",
)
RESTRUCT_CHARGES = (
    "The company expects pre-tax charges of about {c}, mostly severance, and annual savings of {s} by {y}.",
    "Restructuring charges are estimated at {c}; the plan should save {s} a year by {y}.",
)
RESTRUCT_CAUSE = ("The move follows {d}.", "{short} has been hurt by {d}.")
RESTRUCT_QUOTE = (
    '"These are difficult decisions," said {ceo}, "but necessary to protect our margins."',
    "{ceo}, chief executive, said the plan will simplify the organization.",
)
RESTRUCT_DIVISION = ("The {s} division will be most affected.", "Most of the reductions will come in {s}.")
