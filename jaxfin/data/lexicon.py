"""Built-in finance lexicon for the keyword filter (`data.filters.keywords`), English and Chinese.

`FINANCE_EN`: ~290 English terms and phrases (instruments, accounting, banking, markets, macro and central
banking, credit, regulation). They are matched case-insensitively on word boundaries and each also matches its
regular plural (see `jaxfin.data.filters.KeywordMatcher`), so only singular forms are listed. Everyday words that
are common outside finance ("yield", "interest", "share", "price", "Fed" = fed) are only listed inside phrases.

`FINANCE_ZH`: ~150 Chinese concepts, ~270 strings: each in Simplified *and* Traditional form where the two differ
(货币政策 / 貨幣政策), plus the Taiwan wording where it differs from the mainland one (通膨 / 通胀, 殖利率, 本益比 /
市盈率, 信用評等 / 信用评级). Chinese terms match as substrings (Chinese has no word boundaries).

In a keyword list, `"@finance"` stands for both, `"@finance_en"` / `"@finance_zh"` for one language.
Both tuples are sorted and free of duplicates (also case-insensitively); tests check it.
"""

from __future__ import annotations

# fmt: off
FINANCE_EN = (
    "10-K", "10-Q", "Bank of England", "Bank of Japan", "Basel Committee", "Basel III", "CPI", "Dodd-Frank",
    "Dow Jones", "EBIT", "EBITDA", "ECB", "ETF", "European Central Bank", "FDIC", "FOMC", "Federal Reserve", "GAAP",
    "GDP", "IFRS", "IMF", "IPO", "KYC", "LIBOR", "M&A", "NASDAQ", "NYSE", "P/E ratio", "S&P 500",
    "Securities and Exchange Commission", "Tier 1 capital", "World Bank", "accounts payable", "accounts receivable",
    "accrual", "accrued interest", "acquisition", "amortization", "amortized cost", "annual percentage rate",
    "annual report", "annuity", "anti-money laundering", "arbitrage", "asset", "asset allocation", "asset management",
    "asset price", "asset-backed security", "audit", "auditor", "bailout", "balance of payments", "balance of trade",
    "balance sheet", "bank", "bank holding company", "banking", "bankruptcy", "basis points", "bear market",
    "benchmark rate", "bid-ask spread", "bitcoin", "blue chip", "bond", "bond yield", "bondholder", "book value",
    "bps", "broker-dealer", "brokerage", "budget deficit", "bull market", "business investment", "call option",
    "capital adequacy", "capital buffer", "capital expenditure", "capital gain", "capital market", "capital ratio",
    "capital requirement", "cash flow", "central bank", "central bank digital currency", "certificate of deposit",
    "clearinghouse", "collateral", "collateralized loan obligation", "commercial bank", "commercial paper",
    "commercial real estate", "commodity", "common stock", "consumer credit", "consumer price index",
    "consumer spending", "convertible bond", "convexity", "core inflation", "corporate bond", "cost of capital",
    "countercyclical", "coupon rate", "credit", "credit card", "credit default swap", "credit rating", "credit risk",
    "credit spread", "credit union", "creditor", "cryptocurrency", "currency", "current account", "custodian", "debt",
    "debt ceiling", "debt-to-equity", "default risk", "deflation", "delinquency", "delinquency rate", "deposit",
    "deposit insurance", "depreciation", "derivative", "discount rate", "discount window", "disinflation",
    "diversification", "dividend", "dividend yield", "dollar", "due diligence", "earnings", "earnings per share",
    "economic growth", "emerging market", "equity", "escrow", "eurozone", "exchange rate", "exchange-traded fund",
    "fair value", "federal funds rate", "fiduciary", "financial crisis", "financial institution",
    "financial stability", "financial statement", "fintech", "fiscal deficit", "fiscal policy", "fixed income",
    "foreclosure", "foreign exchange", "forex", "forward contract", "free cash flow", "futures contract",
    "gross domestic product", "gross margin", "hedge fund", "holding company", "housing market", "impairment",
    "income statement", "index fund", "inflation", "inflation expectation", "initial public offering", "insolvency",
    "institutional investor", "insurance", "insurer", "interest expense", "interest income", "interest rate",
    "interest rate swap", "inventory", "investment", "investment bank", "investment fund", "investment grade",
    "investor", "jobless claims", "junk bond", "know your customer", "labor market", "lender", "lending", "leverage",
    "leveraged buyout", "liability", "line of credit", "liquidity", "liquidity risk", "loan", "loan loss provision",
    "loan-to-value", "long-term debt", "margin call", "mark-to-market", "market capitalization", "market maker",
    "market risk", "merger", "monetary policy", "money laundering", "money market", "money supply", "mortgage",
    "mortgage rate", "mortgage-backed security", "municipal bond", "mutual fund", "net asset value", "net income",
    "net interest margin", "net worth", "non-performing loan", "nonfarm payroll", "open market operation",
    "operating income", "operating margin", "over-the-counter", "payment system", "pension fund", "portfolio",
    "preferred stock", "price-to-earnings", "private equity", "producer price index", "profit margin", "prospectus",
    "put option", "quantitative easing", "rate cut", "rate hike", "real estate", "recession", "refinancing", "repo",
    "repurchase agreement", "reserve requirement", "retained earnings", "return on assets", "return on equity",
    "revenue", "risk management", "risk-weighted asset", "securities", "securitization", "share buyback",
    "share price", "shareholder", "short selling", "solvency", "sovereign debt", "stablecoin", "stagflation", "stock",
    "stock exchange", "stock market", "stockholder", "stress test", "subprime", "swap", "syndicated loan", "tariff",
    "taxable income", "trade balance", "trade deficit", "trade surplus", "treasury bill", "treasury bond",
    "treasury yield", "underwriter", "underwriting", "unemployment rate", "valuation", "venture capital",
    "volatility", "wealth management", "working capital", "write-down", "write-off", "yield curve", "yield spread",
    "yield to maturity", "zero-coupon bond",
)

FINANCE_ZH = (
    "上市公司", "不良貸款", "不良贷款", "中央銀行", "中央银行", "交易所", "人民币", "人民幣", "人民銀行", "人民银行",
    "会计", "会计师", "併購", "保證金", "保证金", "保险", "保险业", "保險", "保險業", "信托", "信用卡", "信用評等",
    "信用评级", "信託", "信貸", "信贷", "债券", "债务", "债务人", "债权", "债权人", "債券", "債務", "債務人", "債權",
    "債權人", "內線交易", "內部控制", "公债", "公債", "公司债", "公司債", "公开发行", "公开市场操作", "公開市場操作",
    "公開發行", "内幕交易", "内部控制", "净利润", "准备金", "利差", "利息", "利率", "匯款", "匯率", "匯票", "反洗錢",
    "反洗钱", "发行人", "可轉換公司債", "可转换公司债", "商业本票", "商業本票", "国债", "国内生产总值", "国库",
    "國債", "國內生產毛額", "國庫", "基金", "增值税", "外匯", "外匯儲備", "外匯存底", "外汇", "外汇储备", "央行",
    "存托凭证", "存款", "存款保险", "存款保險", "存款准备金率", "存款準備率", "存託憑證", "存貨", "存货", "审计",
    "審計", "市值", "市盈率", "并购", "应付账款", "应收账款", "征信", "徵信", "應付帳款", "應收帳款", "所得稅",
    "所得税", "承銷", "承销", "投資", "投資人", "投资", "投资者", "折旧", "折舊", "抵押", "担保", "损益表", "授信",
    "損益表", "摊销", "操縱市場", "操纵市场", "擔保", "攤銷", "支付机构", "支付機構", "支票", "收益率", "收購",
    "收购", "放款", "新台币", "新台幣", "新臺幣", "景气", "景氣", "會計", "會計師", "有价证券", "有價證券", "期权",
    "期權", "期貨", "期貨交易", "期货", "期货交易", "本益比", "本票", "杠杆", "槓桿", "殖利率", "每股收益",
    "每股盈餘", "毛利", "汇款", "汇率", "汇票", "洗錢", "洗钱", "流动性", "流動性", "消費者物價指數",
    "消费者物价指数", "淨利", "清偿", "清償", "清算", "準備金", "營業利益", "營業收入", "營業稅", "现金流量表",
    "現金流量表", "电子支付", "發行人", "破产", "破產", "票券", "票据", "票據", "私募基金", "稅收", "税收", "紅利",
    "結算", "經濟成長", "經紀商", "红利", "经济增长", "经纪商", "结算", "美元", "股东", "股份", "股利", "股息",
    "股权", "股東", "股權", "股票", "营业收入", "营业税", "董事会", "董事會", "融券", "融資", "融资", "衍生品",
    "衍生性商品", "衍生性金融商品", "證券", "證券交易所", "證券投資信託", "證監會", "证券", "证券交易所",
    "证券投资信托", "证监会", "財務報表", "財政", "貨幣", "貨幣市場", "貨幣政策", "貸款", "資本", "資本充足率",
    "資本市場", "資本適足率", "資產管理", "資產證券化", "資產負債表", "質押", "财务报表", "财政", "货币", "货币市场",
    "货币政策", "质押", "贷款", "资产管理", "资产证券化", "资产负债表", "资本", "资本充足率", "资本市场", "违约",
    "通胀", "通膨", "通貨緊縮", "通貨膨脹", "通货紧缩", "通货膨胀", "逾期放款", "違約", "選擇權", "金管会", "金管會",
    "金融", "金融市场", "金融市場", "金融控股公司", "金融机构", "金融機構", "金融消費者", "金融消费者",
    "金融监督管理委员会", "金融監督管理委員會", "金融科技", "金融稳定", "金融穩定", "銀行", "銀行業", "银行",
    "银行业", "電子支付", "預算", "预算", "風險管理", "风险管理", "首次公开发行", "首次公開發行",
)
# fmt: on

LEXICONS: dict[str, tuple[str, ...]] = {
    "@finance": FINANCE_EN + FINANCE_ZH,
    "@finance_en": FINANCE_EN,
    "@finance_zh": FINANCE_ZH,
}


def resolve_keywords(items: list[str]) -> list[str]:
    """Expand lexicon names (`@finance`, `@finance_en`, `@finance_zh`) in a keyword list.

    Other items are kept as given (surrounding whitespace stripped, empty ones dropped). The result keeps the first
    occurrence of each term, in order. An unknown `@name` is an error that names the known ones.
    """
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item.startswith("@"):
            if item not in LEXICONS:
                raise ValueError(f"unknown keyword lexicon {item!r}; known: {', '.join(sorted(LEXICONS))}")
            terms = LEXICONS[item]
        else:
            terms = (item,)
        for term in terms:
            if term not in seen:
                seen.add(term)
                out.append(term)
    return out
