"""Offline training of the Q-retriever on original-format pairs: wall time and ROC-AUC on held-out queries.

    python benchmarks/offline_training.py --data PATH/TO/training_data.jsonl [--device cpu] [--seeds 0,1,2]

For each seed, a fifth of the queries (and every pair of theirs) is held out as a test set that
training never sees, not even for early stopping (`train_offline` holds out another fifth of the
remaining queries for that, and reports its best epoch's AUC there: the figure `memento retriever
train` prints, chosen on that split, so optimistic). Printed in the same run, on the same test
pairs: the Q-retriever as `memento retriever train` builds it, the same without the lexical term,
the online network (no MLP), cosine similarity alone, and a logistic regression on the frozen
embeddings' standardised features ([t*c, |t-c|, cos]). First, how the labels are spread over the
queries: a label that is constant within each query says how hard the query was, not which case
helped, and cannot be predicted for a new query from which case it is paired with.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memento.memory.encoder import TextEncoder  # noqa: E402
from memento.memory.q_retriever import QRetriever  # noqa: E402
from memento.memory.training import (  # noqa: E402
    PairFeatures,
    evaluate,
    featurize,
    offline_settings,
    read_pairs,
    split_by_query,
    train_offline,
)


def logistic_baseline(train: PairFeatures, test: PairFeatures) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(f: PairFeatures) -> np.ndarray:
        cos = (f.task * f.case_task).sum(1, keepdims=True)
        return np.concatenate([f.task * f.case_task, np.abs(f.task - f.case_task), cos], axis=1)

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(features(train), train.label)
    return float(roc_auc_score(test.label, model.predict_proba(features(test))[:, 1]))


def main() -> None:
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = read_pairs(args.data)
    encoder = TextEncoder(device=args.device)
    features = featurize(rows, encoder)
    print(f"pairs {len(rows)}, distinct texts encoded {encoder.texts_encoded} in {time.perf_counter() - started:.1f} s")
    by_query: dict[str, set[bool]] = {}
    for row in rows:
        by_query.setdefault(row["query"], set()).add(bool(row["truth_label"]))
    mixed = sum(len(labels) == 2 for labels in by_query.values())
    positive = sum(labels == {True} for labels in by_query.values())
    print(f"queries {len(by_query)}: {positive} with every pair positive, {len(by_query) - positive - mixed} with every "
          f"pair negative, {mixed} with both labels")
    results: dict[str, list[float]] = {}
    validation: dict[str, list[float]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        train, test = split_by_query(features, 0.2, seed=1000 + seed)
        for name, settings in (("Q-retriever (memento retriever train)", offline_settings(seed=seed)),
                               ("Q-retriever without the lexical term", offline_settings(seed=seed, lexical=False)),
                               ("Q-retriever as trained online (no MLP)", offline_settings(seed=seed, embedding_mlp=False))):
            retriever = QRetriever(encoder.dim, encoder.name, args.device, settings)
            report = train_offline(retriever, train, progress=False)
            auc = evaluate(retriever, test)["roc_auc"]
            results.setdefault(name, []).append(auc)
            validation.setdefault(name, []).append(report.val_roc_auc)
            print(f"seed {seed}: {name}: test ROC-AUC {auc:.4f} (validation {report.val_roc_auc:.4f}, "
                  f"{report.epochs} epochs, best {report.best_epoch}, {report.wall_s:.1f} s; "
                  f"{report.n_train} train / {report.n_val} validation / {len(test)} test pairs)")
        cosine = float(roc_auc_score(test.label, (test.task * test.case_task).sum(1)))
        results.setdefault("cosine similarity alone", []).append(cosine)
        results.setdefault("logistic regression on frozen embeddings", []).append(logistic_baseline(train, test))
    print(f"\nROC-AUC on the test queries, mean over seeds {args.seeds} (each seed's); in brackets the validation "
          "split's best epoch, as `memento retriever train` prints it:")
    for name, values in results.items():
        extra = f"  [validation {np.mean(validation[name]):.4f}]" if name in validation else ""
        print(f"  {name:<42} {np.mean(values):.4f}  ({', '.join(f'{v:.3f}' for v in values)}){extra}")
    print(f"total {time.perf_counter() - started:.1f} s on {args.device}")


if __name__ == "__main__":
    main()
