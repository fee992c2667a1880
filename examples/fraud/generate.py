"""Generate examples/fraud/data/transactions.csv: a synthetic card-transaction table.

Deterministic (numpy RandomState with a fixed seed, no network): running it twice writes the
same bytes, so the committed CSV can be checked against it. Fraud is drawn from a logistic
model with interactions and noise, so no feature (or simple rule) separates it:

* large amounts relative to the account's 30-day average, night-time online purchases, young
  accounts making many transactions, and long distances from home raise the odds;
* some countries and merchant categories are riskier than others;
* a latent per-transaction noise term (unobserved) keeps even the true model far from perfect.

Some numeric cells are left empty (missing at random) to exercise the missing-value policy.

    python examples/fraud/generate.py            # writes the CSV, prints sklearn baselines
    python examples/fraud/generate.py --out x.csv --no-baselines
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

SEED = 20_240_501
ROWS = 6000
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "transactions.csv"
LABEL = "is_fraud"
NUMERIC = ("amount", "avg_amount_30d", "account_age_days", "txn_hour", "distance_km", "n_txn_24h")
CATEGORICAL = ("country", "merchant_category", "channel")
COLUMNS = (*NUMERIC, *CATEGORICAL, LABEL)

COUNTRIES = {"US": 0.34, "GB": 0.18, "DE": 0.16, "FR": 0.14, "BR": 0.10, "NG": 0.08}
COUNTRY_RISK = {"US": 0.0, "GB": -0.2, "DE": -0.3, "FR": -0.1, "BR": 0.5, "NG": 0.8}
CATEGORIES = {
    "grocery": 0.22,
    "restaurants": 0.16,
    "fuel": 0.12,
    "fashion": 0.12,
    "electronics": 0.12,
    "travel": 0.10,
    "gaming": 0.08,
    "jewelry": 0.08,
}
CATEGORY_RISK = {
    "grocery": -0.8,
    "restaurants": -0.5,
    "fuel": -0.3,
    "fashion": 0.1,
    "electronics": 0.6,
    "travel": 0.3,
    "gaming": 0.7,
    "jewelry": 0.9,
}
CHANNELS = {"in_store": 0.5, "online": 0.35, "mobile": 0.15}
# Cells left empty (missing at random) per numeric column.
MISSING = {"avg_amount_30d": 0.04, "account_age_days": 0.03, "distance_km": 0.05}
INTERCEPT = -5.5  # tuned so that about 4 % of the transactions are fraud


def _choice(rng: np.random.RandomState, table: dict[str, float], n: int) -> np.ndarray:
    names = list(table)
    p = np.asarray([table[k] for k in names], dtype=np.float64)
    return np.asarray(names, dtype=object)[rng.choice(len(names), size=n, p=p / p.sum())]


def generate(seed: int = SEED, rows: int = ROWS) -> dict[str, np.ndarray]:
    """The table's columns (numeric float64 with NaN = missing, strings, label int 0/1)."""
    rng = np.random.RandomState(seed)
    country = _choice(rng, COUNTRIES, rows)
    category = _choice(rng, CATEGORIES, rows)
    channel = _choice(rng, CHANNELS, rows)
    avg = np.round(rng.lognormal(3.6, 0.6, rows), 2)
    # Amounts scatter around the account's usual spend; a few are much larger.
    ratio = rng.lognormal(0.0, 0.7, rows) * np.where(rng.rand(rows) < 0.06, 4.0, 1.0)
    amount = np.round(np.maximum(avg * ratio, 0.5), 2)
    age = np.floor(rng.gamma(1.6, 420.0, rows))
    hour = np.where(rng.rand(rows) < 0.85, rng.normal(14, 4, rows), rng.uniform(0, 24, rows))
    hour = np.mod(np.floor(hour), 24)
    distance = np.round(rng.lognormal(2.0, 1.3, rows), 1)
    n_txn = rng.poisson(np.where(rng.rand(rows) < 0.1, 9.0, 3.0))

    online = (channel == "online") | (channel == "mobile")
    night = (hour <= 5) | (hour >= 23)
    young = age < 90
    logit = (
        INTERCEPT
        + 2.0 * np.log(amount / avg)
        + 2.8 * (night & online)  # interaction: night-time card-not-present
        + 0.11 * n_txn * young  # interaction: new accounts on a spree
        + 0.5 * young
        + 0.8 * np.log1p(distance / 50.0)
        + np.vectorize(COUNTRY_RISK.get)(country)
        + np.vectorize(CATEGORY_RISK.get)(category)
        + 0.6 * online
        + rng.normal(0.0, 0.6, rows)  # what the table does not show
    )
    label = (rng.rand(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    numeric = {
        "amount": amount,
        "avg_amount_30d": avg,
        "account_age_days": age,
        "txn_hour": hour,
        "distance_km": distance,
        "n_txn_24h": n_txn.astype(np.float64),
    }
    for name, fraction in MISSING.items():
        numeric[name] = np.where(rng.rand(rows) < fraction, np.nan, numeric[name])
    return {
        **numeric,
        "country": country,
        "merchant_category": category,
        "channel": channel,
        LABEL: label,
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return ""  # an empty cell: the missing-value policy's input
        return str(int(value)) if value.is_integer() else f"{value:.2f}".rstrip("0")
    return str(value)


def to_csv(columns: dict[str, np.ndarray]) -> bytes:
    """The columns as CSV bytes (UTF-8, '\\n' line ends, fixed number formatting)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in zip(*(columns[c].tolist() for c in COLUMNS), strict=True):
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def write(path: Path = DEFAULT_OUT, seed: int = SEED) -> Path:
    """Write the CSV to `path` (parents created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_csv(generate(seed)))
    return path


def read(path: Path = DEFAULT_OUT) -> dict[str, np.ndarray]:
    """The CSV's columns: numeric as float64 (empty cell = NaN), strings, the label as int."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, np.ndarray] = {
        c: np.asarray([float(r[c]) if r[c] else np.nan for r in rows]) for c in NUMERIC
    }
    out.update({c: np.asarray([r[c] for r in rows], dtype=object) for c in CATEGORICAL})
    out[LABEL] = np.asarray([int(r[LABEL]) for r in rows], dtype=np.int64)
    return out


def baselines(path: Path = DEFAULT_OUT, seed: int = SEED) -> dict[str, dict[str, float]]:
    """PR AUC / ROC AUC of scikit-learn models on a stratified 70/30 split of the CSV: the bar
    a TensorFlow model should clear, and proof the data is not trivially separable."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = read(path)
    x = np.column_stack([columns[c] for c in (*NUMERIC, *CATEGORICAL)]).astype(object)
    y = columns[LABEL]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=seed % 2**31
    )
    n = len(NUMERIC)
    prep = make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(range(n))),
        (OneHotEncoder(handle_unknown="ignore"), list(range(n, n + len(CATEGORICAL)))),
    )
    models = {
        "logistic_regression": make_pipeline(prep, LogisticRegression(max_iter=2000)),
        "gradient_boosting": make_pipeline(
            prep, HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
        ),
    }
    scores = {}
    for name, model in models.items():
        p = model.fit(x_tr, y_tr).predict_proba(x_te)[:, 1]
        scores[name] = {
            "pr_auc": float(average_precision_score(y_te, p)),
            "roc_auc": float(roc_auc_score(y_te, p)),
        }
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args(argv)
    path = write(args.out)
    label = generate()[LABEL]
    print(
        f"wrote {path} ({path.stat().st_size} bytes, {len(label)} rows, {label.mean():.2%} fraud)"
    )
    if not args.no_baselines:
        for name, s in baselines(path).items():
            print(f"  {name:20s} pr_auc={s['pr_auc']:.3f} roc_auc={s['roc_auc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
