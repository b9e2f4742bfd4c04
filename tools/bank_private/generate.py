"""Generate demo_data/bank_private: the "bank's private documents" of the finance-brain recipe, in Traditional
Chinese, all fictional (遠景商業銀行 does not exist), from templates filled by `random.Random(seed)`:

- docs/*.html      web pages of the bank's intranet (navigation, footer and scripts around the main text, which a
                   `format: html` source extracts): card products, the credit-rating manual, compliance rules
- credit_rating_{train,test}.jsonl  {"prompt", "label", "text" = prompt + label}: a company's figures and the
                   grade the manual gives it (interest coverage >= 8: A級, 3 to 8: BBB級, below 3: BB級), the x4
                   fine-tune (train) and its eval task (test; configs/eval/tasks/credit_rating*.yaml)
- qa_{credit_card,credit_rating,regulation}.jsonl  {"text"}: question-answer pairs per role (its adapter's data)
- questions.jsonl  {"question", "answer", "category"}: held-out questions whose facts are only in the documents

Run from the repository root: python -m tools.bank_private --out demo_data/bank_private
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

BANK = "遠景商業銀行"
CARDS = ["晨星卡", "白金卡", "御璽卡", "商務卡", "學生卡", "旅遊卡", "悠遊聯名卡", "鈦金卡"]
COMPANIES = ["宏遠電子", "北辰航運", "青禾食品", "港灣建設", "天曜光電", "松岳紡織", "德安醫材", "海豐化工", "瑞峰機械",
             "永信物流", "金川鋼鐵", "明德生技", "嘉禾零售", "長風能源", "立新半導體", "華泰纖維"]  # fmt: skip
RULES = ["大額通貨交易申報", "疑似洗錢交易申報", "客戶資料定期更新", "授信案件覆審", "信用卡額度調整通知",
         "逾期帳款催收通知", "重大偶發事件通報", "個人資料外洩通報"]  # fmt: skip
GRADES = ["A級", "BBB級", "BB級"]

PAGE = """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="utf-8"><title>{title} - {bank}內部網站</title>
<script>window.dataLayer = window.dataLayer || []; function track(){{dataLayer.push(arguments);}}</script></head>
<body>
<nav><ul><li><a href="/">首頁</a></li><li><a href="/cards">信用卡</a></li><li><a href="/credit">授信</a></li>
<li><a href="/compliance">法令遵循</a></li><li><a href="/login">登入</a></li></ul></nav>
<main><article><h1>{title}</h1>
{body}
</article></main>
<footer><p>© {bank} 版權所有｜隱私權政策｜網站地圖｜客服專線 0800-000-000</p></footer>
<script>track("page_view", "{slug}");</script>
</body></html>
"""


def grade(coverage: float) -> str:
    """The manual's rule."""
    return "A級" if coverage >= 8 else "BBB級" if coverage >= 3 else "BB級"


def facts(rng: random.Random) -> dict:
    cards = {c: {"fee": rng.choice([0, 600, 1200, 1800, 2400, 3600, 6000]),
                 "rate": rng.choice([0.5, 1, 1.2, 1.5, 2, 3]),
                 "limit": rng.choice([5, 10, 20, 30, 50, 80, 100])} for c in CARDS}  # fmt: skip
    exposure = {g[:-1]: v for g, v in zip(GRADES, sorted(rng.sample(range(5, 40), 3), reverse=True))}
    rules = {r: {"days": rng.choice([1, 2, 3, 5, 7, 10, 15, 30]), "article": rng.randint(3, 60)} for r in RULES}
    return {"cards": cards, "exposure": exposure, "rules": rules}


def pages(f: dict) -> dict[str, tuple[str, list[str]]]:
    cards = [f"{c}的年費為新台幣{v['fee']:,}元，國內一般消費回饋{v['rate']}%，最高信用額度為新台幣{v['limit']}萬元。"
             for c, v in f["cards"].items()]  # fmt: skip
    cards.append("年費於核卡後首年免收，次年起當年度消費滿十二次者免收次年年費。")
    manual = ["本手冊說明本行企業授信戶之信用評等方式，適用於所有企業授信案件。",
              "利息保障倍數達8倍以上者評為A級；3倍以上未達8倍者評為BBB級；未達3倍者評為BB級。",
              *(f"{g}級企業之單一授信上限為其淨值的{v}%。" for g, v in f["exposure"].items()),
              "評等結果每年至少覆審一次，重大財務變動時應立即重新評等。"]  # fmt: skip
    rules = [f"依本行內規第{v['article']}條，{r}應於{v['days']}個營業日內完成。" for r, v in f["rules"].items()]
    rules.append("未依期限完成者，由法令遵循處列入缺失追蹤，並於每月主管會議報告。")
    return {"cards": ("信用卡產品說明", cards), "rating_manual": ("企業授信信用評等手冊", manual),
            "compliance": ("法令遵循作業規範", rules)}  # fmt: skip


def html(slug: str, title: str, paras: list[str]) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paras)
    return PAGE.format(title=title, bank=BANK, body=body, slug=slug)


def rating_example(rng: random.Random) -> dict:
    cov = round(rng.choice([rng.uniform(0.5, 3), rng.uniform(3, 8), rng.uniform(8, 20)]), 1)
    debt, growth = rng.randint(20, 85), rng.randint(-30, 40)
    trend = f"成長{growth}%" if growth >= 0 else f"衰退{-growth}%"
    prompt = (f"{rng.choice(COMPANIES)}最新財報顯示，利息保障倍數為{cov}倍，負債比率{debt}%，營業收入較去年{trend}。"
              f"依本行信用評等手冊，該公司的信用評等為")  # fmt: skip
    return {"prompt": prompt, "label": grade(cov), "text": prompt + grade(cov)}


def qa(f: dict) -> dict[str, list[dict]]:
    """(question, answer) pairs per role from the documents' facts."""
    card = []
    for c, v in f["cards"].items():
        card += [(f"{c}的年費是多少？", f"新台幣{v['fee']:,}元"), (f"{c}的國內一般消費回饋是多少？", f"{v['rate']}%"),
                 (f"{c}的最高信用額度是多少？", f"新台幣{v['limit']}萬元")]  # fmt: skip
    rating = [(f"{g}級企業的單一授信上限是多少？", f"淨值的{v}%") for g, v in f["exposure"].items()]
    rating += [("利息保障倍數為多少以上評為A級？", "8倍以上"), ("利息保障倍數未達多少評為BB級？", "未達3倍")]
    reg = [(f"{r}應於幾個營業日內完成？", f"{v['days']}個營業日") for r, v in f["rules"].items()]
    reg += [(f"{r}規定在內規第幾條？", f"第{v['article']}條") for r, v in f["rules"].items()]
    return {"credit_card": card, "credit_rating": rating, "regulation": reg}


def build(seed: int = 0) -> dict[str, str]:
    """{relative path: file text}."""
    rng = random.Random(seed)
    f = facts(rng)
    out = {f"docs/{slug}.html": html(slug, title, paras) for slug, (title, paras) in pages(f).items()}
    for split, n in (("train", 600), ("test", 150)):
        rows = [rating_example(rng) for _ in range(n)]
        out[f"credit_rating_{split}.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    questions = []
    for role, pairs in qa(f).items():
        rng.shuffle(pairs)
        held = pairs[: max(2, len(pairs) // 4)]  # held out: only the documents know these
        train = pairs[len(held) :]
        out[f"qa_{role}.jsonl"] = "".join(json.dumps({"text": f"問：{q}\n答：{a}"}, ensure_ascii=False) + "\n"
                                          for q, a in train)  # fmt: skip
        questions += [{"question": q, "answer": a, "category": role} for q, a in held]
    out["questions.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in questions)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_data/bank_private")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for rel, text in build(args.seed).items():
        path = Path(args.out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
