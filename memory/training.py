"""Offline training and evaluation of the Q-retriever on the original Memento pair format.

Rows are `{"query", "case", "case_label", "plan", "truth_label"}`: `truth_label` says whether
planning `query` with that case (and its plan) earned reward 1. Texts are encoded once each;
the validation split is by query, so no query is on both sides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from memento.memory.encoder import TextEncoder
from memento.memory.interchange import CaseFileError, iter_jsonl, parse_original_plan
from memento.memory.lexical import mismatch_ids
from memento.memory.q_retriever import QRetriever, RetrieverSettings

PAIR_KEYS = ("query", "case", "plan", "truth_label")
_LABELS = {"true": True, "1": True, "positive": True, "false": False, "0": False, "negative": False}


def offline_settings(**overrides: object) -> RetrieverSettings:
    """Settings for a retriever trained offline: thousands of labelled pairs can teach the MLP over
    the embeddings, which online, from a few labels a run, only adds noise (it is off there)."""
    return RetrieverSettings(**{"embedding_mlp": True, **overrides})


@dataclass
class PairFeatures:
    queries: list[str]
    task: np.ndarray
    case_task: np.ndarray
    case_plan: np.ndarray
    label: np.ndarray
    mismatch: np.ndarray | None = None  # (n, lexical.WIDTH) hashed differing words; None: no lexical term

    def subset(self, mask: np.ndarray) -> "PairFeatures":
        return PairFeatures([q for q, keep in zip(self.queries, mask) if keep], self.task[mask],
                            self.case_task[mask], self.case_plan[mask], self.label[mask],
                            None if self.mismatch is None else self.mismatch[mask])

    def __len__(self) -> int:
        return len(self.label)


@dataclass
class TrainReport:
    epochs: int
    best_epoch: int
    val_roc_auc: float
    n_train: int
    n_val: int
    wall_s: float


def read_pairs(path: str | Path) -> list[dict]:
    rows = []
    for number, row in iter_jsonl(path):
        missing = [k for k in PAIR_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise CaseFileError(f"{path}, line {number}: missing {', '.join(missing)}; "
                                f"each line needs {', '.join(PAIR_KEYS)}")
        label = _LABELS.get(str(row["truth_label"]).strip().lower())
        if label is None:
            raise CaseFileError(f"{path}, line {number}: truth_label {row['truth_label']!r} is not true or false")
        rows.append({**row, "truth_label": label})
    if not rows:
        raise CaseFileError(f"{path} holds no training pairs")
    return rows


def featurize(rows: list[dict], encoder: TextEncoder) -> PairFeatures:
    """Encode every distinct text once (queries, case tasks and plan texts share one cache)."""
    plans = ["\n".join(parse_original_plan(r["plan"])) or r["case"] for r in rows]
    texts = sorted({r["query"] for r in rows} | {r["case"] for r in rows} | set(plans))
    vectors = encoder.encode(texts)
    index = {t: i for i, t in enumerate(texts)}
    pick = lambda items: vectors[[index[t] for t in items]]  # noqa: E731
    mismatch = np.stack([mismatch_ids(r["query"], r["case"], _case_success(r)) for r in rows])
    return PairFeatures([r["query"] for r in rows], pick([r["query"] for r in rows]), pick([r["case"] for r in rows]),
                        pick(plans), np.asarray([float(r["truth_label"]) for r in rows], np.float32), mismatch)


def _case_success(row: dict) -> bool:
    """Whether the case itself succeeded (`case_label`), as the case bank stores it; unknown: yes."""
    return str(row.get("case_label", "positive")).strip().lower() not in ("negative", "false", "0")


def split_by_query(features: PairFeatures, val_fraction: float, seed: int = 0) -> tuple[PairFeatures, PairFeatures]:
    queries = sorted(set(features.queries))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(queries, size=max(1, int(round(len(queries) * val_fraction))), replace=False))
    mask = np.asarray([q in held for q in features.queries])
    return features.subset(~mask), features.subset(mask)


def evaluate(retriever: QRetriever, features: PairFeatures, threshold: float = 0.5) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    mismatch = features.mismatch if retriever.settings.lexical else None
    scores = np.concatenate([
        retriever.q_values_pairs(features.task[i:i + 4096], features.case_task[i:i + 4096],
                                 features.case_plan[i:i + 4096], None if mismatch is None else mismatch[i:i + 4096])
        for i in range(0, len(features), 4096)])
    labels = features.label.astype(int)
    predicted = (scores >= threshold).astype(int)
    auc = float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")
    return {"roc_auc": auc, "accuracy": float(accuracy_score(labels, predicted)),
            "f1": float(f1_score(labels, predicted, zero_division=0)), "n": int(len(labels))}


def train_offline(retriever: QRetriever, features: PairFeatures, *, val_fraction: float = 0.2, epochs: int = 40,
                  patience: int = 5, batch_size: int = 64, progress: bool = True) -> TrainReport:
    """Minibatch training on (task, case) -> reward, early-stopped on held-out ROC-AUC; keeps the
    best weights. The loss is the online one: BCE, plus the ranking term between cases of one
    query in the batch. With this many labels the similarity prior's kappa and midpoint are
    learned too (online they stay fixed)."""
    start = time.perf_counter()
    train, val = split_by_query(features, val_fraction, retriever.settings.seed)
    if len(train) == 0 or len(set(val.label.tolist())) < 2:
        raise CaseFileError("too few pairs to hold out a validation split with both labels: give more data")
    device = retriever.device
    query_ids = {q: i for i, q in enumerate(dict.fromkeys(train.queries))}
    mismatch = train.mismatch if train.mismatch is not None and retriever.settings.lexical else None
    tensors = [torch.as_tensor(a, device=device) for a in (train.task, train.case_task, train.case_plan, train.label)]
    mismatch_t = None if mismatch is None else torch.as_tensor(mismatch.astype(np.int64), device=device)
    episode_t = torch.as_tensor([query_ids[q] for q in train.queries], device=device)
    ones = torch.ones(batch_size, device=device)
    rng = np.random.default_rng(retriever.settings.seed)
    prior_group = retriever.optimizer.param_groups[1]  # (the network, the prior, the word weights)
    online_prior_lr, prior_group["lr"] = prior_group["lr"], retriever.settings.lr
    best_auc, best_epoch, best_state, epoch = -1.0, 0, None, 0
    bar = tqdm(range(1, epochs + 1), desc="training Q-retriever", unit="epoch", disable=not progress)
    try:
        for epoch in bar:
            order = torch.as_tensor(rng.permutation(len(train)), device=device)
            for start_at in range(0, len(train), batch_size):
                idx = order[start_at:start_at + batch_size]
                task, case_task, case_plan, label = (t[idx] for t in tensors)
                retriever.train_step(task, case_task, case_plan, label, ones[:len(idx)],
                                     None if mismatch_t is None else mismatch_t[idx], episode_t[idx])
            auc = evaluate(retriever, val)["roc_auc"]
            bar.set_postfix(val_roc_auc=f"{auc:.4f}", best=f"{max(auc, best_auc):.4f}")
            if auc > best_auc:
                best_auc, best_epoch = auc, epoch
                best_state = {k: v.detach().clone() for k, v in retriever.network.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
    finally:
        prior_group["lr"] = online_prior_lr
    if best_state is not None:
        retriever.network.load_state_dict(best_state)
        if retriever.target is not None:
            retriever.target.load_state_dict(best_state)
    return TrainReport(epochs=epoch, best_epoch=best_epoch, val_roc_auc=best_auc, n_train=len(train),
                       n_val=len(val), wall_s=time.perf_counter() - start)
