"""What the learner's features can tell apart, given perfect labels: an upper bound per world shape.

    python benchmarks/wording_probe.py WORLD [WORLD ...]

A WORLD is a folder holding `train.jsonl` and `test.jsonl` of `memento bench make-world`, or a
training file `NAME.jsonl` beside its test file `NAME-test.jsonl` (as `learning_curves.py` names them). For every
training task and every other training task of its look-alike group, the label is whether the two
are of one family (what a reward would say about showing that case, were it perfect). A logistic
model over the cosine and the learner's hashed word ids (`memory.lexical.mismatch_ids`: the word
difference, with or without the word pairs) is fitted on those pairs, then scores each test task
against the training tasks of its group. Printed per world and feature set: ROC-AUC own family vs
look-alike, and the share of own-family cases among each test task's 4 highest, beside the cosine
alone. Online, the learner has a few noisy labels a run, not these; this says what its features
could carry at best, not what it learns.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from memento.memory.encoder import TextEncoder
from memento.memory.lexical import BUCKETS, PAD, mismatch_ids


def load(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"text": r["question"], "family": r["metadata"]["family"], "group": r["metadata"]["group"]} for r in rows]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def probe(train: list[dict], test: list[dict], pairs: bool) -> tuple[float, float, float, float]:
    def rows(queries: list[dict], exclude_self: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ids, labels, cosines, owner = [], [], [], []
        for q, task in enumerate(queries):
            for case in train:
                if case["group"] != task["group"] or (exclude_self and case is task):
                    continue
                ids.append(mismatch_ids(task["text"], case["text"], True, pairs))
                labels.append(float(task["family"] == case["family"]))
                cosines.append(float(task["vector"] @ case["vector"]))
                owner.append(q)
        return np.stack(ids), np.asarray(labels), np.asarray(cosines, np.float32), np.asarray(owner)

    train_ids, train_y, train_cos, _ = rows(train, True)
    test_ids, test_y, test_cos, owner = rows(test, False)
    torch.manual_seed(0)
    weights = torch.nn.Embedding(BUCKETS + 1, 1, padding_idx=PAD)
    torch.nn.init.zeros_(weights.weight)
    scale = torch.nn.Parameter(torch.tensor([10.0, 0.0]))
    optimizer = torch.optim.Adam([*weights.parameters(), scale], lr=0.05)
    x, y, c = torch.as_tensor(train_ids, dtype=torch.long), torch.as_tensor(train_y), torch.as_tensor(train_cos)
    for _ in range(300):
        logit = scale[0] * (c - 0.5) + scale[1] + weights(x).sum((1, 2))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y.float()) + 1e-4 * weights.weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = (scale[0] * (torch.as_tensor(test_cos) - 0.5) + scale[1]
                  + weights(torch.as_tensor(test_ids, dtype=torch.long)).sum((1, 2))).numpy()

    def top4(s: np.ndarray) -> float:
        return float(np.mean([test_y[owner == q][np.argsort(-s[owner == q], kind="stable")[:4]].mean()
                              for q in np.unique(owner)]))
    return auc(scores, test_y), top4(scores), auc(test_cos, test_y), top4(test_cos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worlds", nargs="+", type=Path)
    args = parser.parse_args()
    encoder = TextEncoder()
    for world in args.worlds:
        files = ((world / "train.jsonl", world / "test.jsonl") if world.is_dir()
                 else (world, world.with_name(f"{world.stem}-test.jsonl")))
        train, test = load(files[0]), load(files[1])
        vectors = encoder.encode([t["text"] for t in train + test])
        for task, vector in zip(train + test, vectors):
            task["vector"] = vector / np.linalg.norm(vector)
        for name, pairs in (("word difference", False), ("difference + word pairs", True)):
            got, top, cosine, cosine_top = probe(train, test, pairs)
            print(f"{world}: {name:<24} AUC {got:.3f}  own in top 4 {top:.3f}   "
                  f"(cosine alone: AUC {cosine:.3f}, own in top 4 {cosine_top:.3f})", flush=True)


if __name__ == "__main__":
    main()
