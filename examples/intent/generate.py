"""Generate examples/intent/data/utterances.csv: short banking-assistant utterances + intent.

Deterministic (numpy RandomState with a fixed seed, no network): templates x slot values x
politeness prefixes and suffixes, sampled without repeats. Not trivially separable on purpose:

* the intents share vocabulary ("card", "account", "money", "balance", "transfer" each appear
  under several intents, and greetings / thanks wrap utterances of every intent);
* some templates are genuinely ambiguous between two intents, labelled as a person would most
  often label them;
* a small fraction of labels is flipped to a related intent (annotator noise), so even a
  perfect model stays below 100 % accuracy.

    python examples/intent/generate.py            # writes the CSV, prints sklearn baselines
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

SEED = 20_240_502
PER_INTENT = 300
LABEL_NOISE = 0.03
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "utterances.csv"
COLUMNS = ("text", "intent")

SLOTS = {
    "account": ["checking", "savings", "current", "joint", "business", "main"],
    "amount": ["20", "50", "100", "250", "500", "1000", "75 dollars", "200 euros", "a few hundred"],
    "person": ["my mom", "john", "my landlord", "sarah", "my brother", "alex", "my savings"],
    "card": ["debit card", "credit card", "card", "visa", "bank card", "mastercard"],
    "loan": ["mortgage", "car loan", "personal loan", "student loan", "home loan", "loan"],
}
# {slot} markers are filled from SLOTS; every intent reuses words of the others.
TEMPLATES: dict[str, list[str]] = {
    "check_balance": [
        "what is my {account} balance",
        "how much money is in my {account} account",
        "show me the balance of my {account} account",
        "check my balance",
        "do i have {amount} in my {account} account",
        "how much can i spend on my {card}",
        "what's left on my {card} this month",
        "is there enough money to pay {person}",
        "tell me my account balance",
        "balance on {account} please",
    ],
    "transfer_money": [
        "send {amount} to {person}",
        "transfer {amount} from my {account} account to {person}",
        "move {amount} into my {account} account",
        "i want to pay {person} {amount}",
        "wire money to {person}",
        "can i transfer money from my {card}",
        "make a transfer of {amount}",
        "move money between my accounts",
        "pay {person} back {amount} from {account}",
        "transfer my balance to {account}",
    ],
    "card_lost": [
        "i lost my {card}",
        "my {card} was stolen",
        "block my {card}",
        "i can't find my {card} anywhere",
        "someone took my wallet with my {card}",
        "freeze my {card} right now",
        "i think my {card} is lost, what do i do",
        "cancel my {card} it is missing",
        "my {card} got stolen and there is money missing from my account",
        "report a lost {card}",
    ],
    "open_account": [
        "i want to open a {account} account",
        "how do i open a new account",
        "can i get a new {account} account",
        "sign me up for a {account} account",
        "open an account for {person}",
        "what do i need to open a {account} account",
        "i'd like a new {card} with a new account",
        "start a {account} account with {amount}",
        "create a {account} account for me",
        "i want a second account to move money into",
    ],
    "loan_info": [
        "what is the interest rate on a {loan}",
        "can i borrow {amount}",
        "how do i apply for a {loan}",
        "tell me about your {loan} options",
        "am i eligible for a {loan}",
        "how much is my {loan} payment",
        "what is the balance on my {loan}",
        "can i pay off my {loan} early from my {account} account",
        "i need money for a {loan}",
        "loan rates please",
    ],
    "greeting": [
        "hello",
        "hi there",
        "good morning",
        "hey",
        "good afternoon",
        "hello, is anyone there",
        "hi, i have a question about my account",
        "hey there, can you help me",
        "greetings",
        "hi bank",
    ],
    "goodbye": [
        "bye",
        "thanks, that's all",
        "goodbye",
        "see you later",
        "that's everything, thank you",
        "thanks for the help with my account, bye",
        "have a nice day",
        "i'm done, thanks",
        "ok bye now",
        "no more questions, goodbye",
    ],
}
PREFIXES = [
    "",
    "",
    "",
    "hi, ",
    "hello, ",
    "hey, ",
    "excuse me, ",
    "um ",
    "ok so ",
    "quick question: ",
]
SUFFIXES = ["", "", "", " please", " thanks", " today", " now", " asap", "?", " thank you"]
# Annotator noise goes to a related intent, as real confusions do.
CONFUSED_WITH = {
    "check_balance": "transfer_money",
    "transfer_money": "check_balance",
    "card_lost": "open_account",
    "open_account": "loan_info",
    "loan_info": "check_balance",
    "greeting": "goodbye",
    "goodbye": "greeting",
}
INTENTS = tuple(TEMPLATES)


def _fill(template: str, rng: np.random.RandomState) -> str:
    text = template
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", values[rng.randint(len(values))], 1)
    return text


def generate(seed: int = SEED, per_intent: int = PER_INTENT) -> list[tuple[str, str]]:
    """(text, intent) rows: `per_intent` distinct utterances per intent, shuffled."""
    rng = np.random.RandomState(seed)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for intent in INTENTS:
        made, tries = 0, 0
        while made < per_intent and tries < per_intent * 50:
            tries += 1
            core = _fill(TEMPLATES[intent][rng.randint(len(TEMPLATES[intent]))], rng)
            prefix = PREFIXES[rng.randint(len(PREFIXES))]
            text = prefix + core + SUFFIXES[rng.randint(len(SUFFIXES))]
            if text in seen:
                continue
            seen.add(text)
            rows.append((text, intent))
            made += 1
    order = rng.permutation(len(rows))
    noisy = rng.rand(len(rows)) < LABEL_NOISE
    return [
        (rows[i][0], CONFUSED_WITH[rows[i][1]] if flip else rows[i][1])
        for i, flip in zip(order.tolist(), noisy.tolist(), strict=True)
    ]


def to_csv(rows: list[tuple[str, str]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def write(path: Path = DEFAULT_OUT, seed: int = SEED) -> Path:
    """Write the CSV to `path` (parents created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_csv(generate(seed)))
    return path


def read(path: Path = DEFAULT_OUT) -> tuple[list[str], list[str]]:
    """(texts, intents) of the CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["intent"] for r in rows]


def baselines(path: Path = DEFAULT_OUT, seed: int = SEED) -> dict[str, dict[str, float]]:
    """Accuracy / macro F1 of scikit-learn text classifiers on a stratified 70/30 split."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    texts, intents = read(path)
    x_tr, x_te, y_tr, y_te = train_test_split(
        texts, intents, test_size=0.3, stratify=intents, random_state=seed % 2**31
    )
    models = {
        "tfidf_logistic_regression": make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=2000)
        ),
        "bag_of_words_naive_bayes": make_pipeline(CountVectorizer(), MultinomialNB()),
    }
    scores = {}
    for name, model in models.items():
        pred = model.fit(x_tr, y_tr).predict(x_te)
        scores[name] = {
            "accuracy": float(accuracy_score(y_te, pred)),
            "macro_f1": float(f1_score(y_te, pred, average="macro")),
        }
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args(argv)
    path = write(args.out)
    _, intents = read(path)
    counts = {i: intents.count(i) for i in INTENTS}
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(intents)} rows): {counts}")
    if not args.no_baselines:
        for name, s in baselines(path).items():
            print(f"  {name:26s} accuracy={s['accuracy']:.3f} macro_f1={s['macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
