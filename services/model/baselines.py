"""Plain scikit-learn reference models on a dataset artifact's own split.

What a deployed model is measured against (tests, `make bench`): TF-IDF (word 1-2-grams) and
logistic regression for text, HistGradientBoosting with native categorical support for tables,
trained on the train split with library defaults and scored on the test split. No search, no
tuning: the bar a model must clear to be worth its cost.
"""

from __future__ import annotations

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, mean_absolute_error

from services.common.table_dataset import TableSplits, canonical_table_frame
from services.common.text_dataset import TextSplits


def tfidf_accuracy(splits: TextSplits) -> float:
    """Test accuracy of TF-IDF (1-2-grams, sublinear tf) + logistic regression trained on the train split."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10.0)
    model.fit(vectorizer.fit_transform(splits.train_texts), splits.train_labels)
    return float(accuracy_score(splits.test_labels, model.predict(vectorizer.transform(splits.test_texts))))


def _hgb_frame(splits: TableSplits, split: str, categories: dict[str, pd.Index] | None = None) -> pd.DataFrame:
    frame = canonical_table_frame(splits.features(split), splits.spec)
    for name in splits.spec.categorical_features:
        frame[name] = pd.Categorical(frame[name], categories=None if categories is None else categories[name])
    return frame


def hgb_score(splits: TableSplits) -> float:
    """HistGradientBoosting on the train split: test accuracy (classification) or test MAE (regression)."""
    train = _hgb_frame(splits, "train")
    test = _hgb_frame(splits, "test", {n: train[n].cat.categories for n in splits.spec.categorical_features})
    if splits.spec.task == "classification":
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
        model.fit(train, splits.label_indices("train"))
        return float(accuracy_score(splits.label_indices("test"), model.predict(test)))
    model = HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=0)
    model.fit(train, splits.labels("train").to_numpy())
    return float(mean_absolute_error(splits.labels("test").to_numpy(), model.predict(test)))
