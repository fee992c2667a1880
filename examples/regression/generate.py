"""Write examples/regression/data/diabetes.csv from scikit-learn's bundled diabetes data set.

`sklearn.datasets.load_diabetes(scaled=False)` ships inside scikit-learn (no network): 442
patients, ten baseline measurements in their original units, and the target, a measure of
disease progression one year later. Written unscaled on purpose: tfship's default model
normalises inside the model, so the SavedModel takes the values a clinic records.

    python examples/regression/generate.py        # writes the CSV, prints sklearn baselines
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "diabetes.csv"
LABEL = "progression"
# scikit-learn's names: age, sex, body mass index, mean blood pressure, six blood serum
# measurements (s1 total cholesterol ... s6 blood sugar).
FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
COLUMNS = (*FEATURES, LABEL)


def _cell(value: float) -> str:
    # repr-shortest form, integers without ".0": stable across platforms and NumPy versions.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def to_csv() -> bytes:
    """The data set as CSV bytes (sex stays the raw code 1 / 2: a categorical id)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row, target in zip(np.asarray(data.data).tolist(), data.target.tolist(), strict=True):
        writer.writerow([_cell(v) for v in row] + [_cell(target)])
    return out.getvalue().encode("utf-8")


def write(path: Path = DEFAULT_OUT) -> Path:
    """Write the CSV to `path` (parents created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_csv())
    return path


def read(path: Path = DEFAULT_OUT) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 [n, 10], target float64 [n])."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    x = np.asarray([[float(r[c]) for c in FEATURES] for r in rows])
    return x, np.asarray([float(r[LABEL]) for r in rows])


def baselines(path: Path = DEFAULT_OUT, seed: int = 42) -> dict[str, dict[str, float]]:
    """RMSE / MAE / R2 of scikit-learn regressors on a 70/30 split, and of the mean."""
    from sklearn.dummy import DummyRegressor
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = read(path)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=seed)
    models = {
        "mean": DummyRegressor(),
        "ridge": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
        "random_forest": RandomForestRegressor(
            n_estimators=200, min_samples_leaf=3, random_state=0
        ),
    }
    scores = {}
    for name, model in models.items():
        pred = model.fit(x_tr, y_tr).predict(x_te)
        scores[name] = {
            "rmse": float(np.sqrt(mean_squared_error(y_te, pred))),
            "mae": float(mean_absolute_error(y_te, pred)),
            "r2": float(r2_score(y_te, pred)),
        }
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args(argv)
    path = write(args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    if not args.no_baselines:
        for name, s in baselines(path).items():
            print(f"  {name:14s} rmse={s['rmse']:.1f} mae={s['mae']:.1f} r2={s['r2']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
