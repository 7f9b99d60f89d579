"""Offline training of the Q-retriever on original-format pairs: wall time and held-out ROC-AUC.

    python benchmarks/offline_training.py --data PATH/TO/training_data.jsonl [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memento.memory.encoder import TextEncoder  # noqa: E402
from memento.memory.q_retriever import QRetriever  # noqa: E402
from memento.memory.training import featurize, read_pairs, train_offline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = read_pairs(args.data)
    encoder = TextEncoder(device=args.device)
    features = featurize(rows, encoder)
    encoded_s = time.perf_counter() - started
    retriever = QRetriever(encoder.dim, encoder.name, args.device)
    report = train_offline(retriever, features, progress=False)
    print(f"pairs {len(rows)} ({report.n_train} train / {report.n_val} held out by query); "
          f"distinct texts encoded {encoder.texts_encoded}")
    print(f"encoding {encoded_s:.1f} s, training {report.wall_s:.1f} s ({report.epochs} epochs, best "
          f"{report.best_epoch}), total {time.perf_counter() - started:.1f} s on {retriever.device}")
    print(f"held-out ROC-AUC {report.val_roc_auc:.4f}")


if __name__ == "__main__":
    main()
