"""What a bench arm's learned retriever separates: own family against look-alike, on unseen tasks.

    python benchmarks/separation.py WORLD ARM_DIR [WORLD ARM_DIR ...]

WORLD is a `make-world` training file `NAME.jsonl` beside its test file `NAME-test.jsonl` (as
`learning_curves.py` names them), or a folder holding `train.jsonl` and `test.jsonl`; ARM_DIR is
the data folder of a parametric arm that played it (`bench run --out OUT` writes
`OUT/arms/parametric`). For each test task, the successful cases in the arm's bank whose source
task is of the same look-alike group are scored by the arm's final retriever (its Q, with the
word features) and by cosine; printed is the mean over test tasks of the ROC-AUC own family
against look-alike, for each. The family labels come from the world's metadata and are read here
only, never by the learner.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from memento.graph.context import Context
from memento.memory.lexical import mismatch_matrix
from memento.memory.q_retriever import QRetriever
from memento.memory.resources import case_bank_for, shared_encoder


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def world_files(world: Path) -> tuple[Path, Path]:
    if world.is_dir():
        return world / "train.jsonl", world / "test.jsonl"
    return world, world.with_name(f"{world.stem}-test.jsonl")


def separation(world: Path, arm: Path) -> tuple[float, float, int]:
    train_file, test_file = world_files(world)
    rows = [json.loads(line) for f in (train_file, test_file) for line in f.read_text().splitlines() if line.strip()]
    meta = {r["question"]: r["metadata"] for r in rows}
    tests = [r for r in rows if r["metadata"].get("split") == "test"]
    ctx = Context(data_dir=str(arm))
    bank = case_bank_for(ctx)
    cases = {c.id: c for c in bank.list() if c.success and c.task in meta}
    ids, case_tasks, case_plans = bank.embeddings(list(cases))
    retriever = QRetriever.load(arm / "retriever.pt", ctx.encoder)
    encoder = shared_encoder(ctx.encoder, ctx.encoder_device)
    learned, cosine = [], []
    for test, vector in zip(tests, encoder.encode([t["question"] for t in tests])):
        group = [k for k, i in enumerate(ids) if meta[cases[i].task]["group"] == test["metadata"]["group"]]
        labels = np.asarray([float(meta[cases[ids[k]].task]["family"] == test["metadata"]["family"]) for k in group])
        if not 0 < labels.sum() < len(labels):
            continue
        words = mismatch_matrix(test["question"], [cases[ids[k]].task for k in group], [True] * len(group),
                                retriever.settings.word_pairs)
        learned.append(auc(retriever.q_values(vector, case_tasks[group], case_plans[group], words), labels))
        cosine.append(auc(case_tasks[group] @ vector, labels))
    return float(np.mean(learned)), float(np.mean(cosine)), len(learned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", type=Path, metavar="WORLD ARM_DIR")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give a WORLD and an ARM_DIR for each arm")
    for world, arm in zip(args.pairs[::2], args.pairs[1::2]):
        learned, cosine, n = separation(world, arm)
        print(f"{world}: ROC-AUC own family vs look-alike over {n} test tasks: learned {learned:.3f}, "
              f"cosine {cosine:.3f}", flush=True)


if __name__ == "__main__":
    main()
