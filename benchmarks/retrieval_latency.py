"""Retrieval latency of `retrieve_cases` (query embedding + Chroma query + Q re-ranking) at
several bank sizes, against the naive design that encodes every case at each query.

    python benchmarks/retrieval_latency.py [--sizes 1000 10000 100000] [--queries 100] [--device cpu]

Banks are filled with random unit vectors (the stored embeddings) so that 100k cases load in
seconds; queries go through the real encoder and the real `select_cases` code path.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from memento.graph.context import Context  # noqa: E402
from memento.memory.case import Case  # noqa: E402
from memento.memory.resources import case_bank_for, retriever_for  # noqa: E402
from memento.nodes.retrieve_cases import select_cases  # noqa: E402

QUERIES = ["What is the total of the figures in the report for region {i}?",
           "Who founded the company that makes product {i}?",
           "How long is river number {i} in kilometres?"]


def fill(bank, size: int, dim: int, rng: np.random.Generator) -> None:
    batch = 5000
    for start in range(0, size, batch):
        n = min(batch, size - start)
        cases = [Case(id=f"c{start + i}", task=f"synthetic task {start + i}", plan=[f"step for {start + i}"],
                      reward=float(rng.random() < 0.6)) for i in range(n)]
        vectors = rng.normal(size=(2, n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        bank.put_embedded(cases, vectors[0], vectors[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50) * 1000), float(np.percentile(samples, 95) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--naive-queries", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="encoder and retriever device")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="memento-bench-") as tmp:
        for size in args.sizes:
            ctx = Context(data_dir=os.path.join(tmp, str(size)), retrieval_mode="parametric",
                          encoder_device=args.device, retriever_device=args.device)
            bank = case_bank_for(ctx)
            started = time.perf_counter()
            fill(bank, size, bank.encoder.dim, rng)
            load_s = time.perf_counter() - started
            retriever_for(ctx).updates = 1  # rank by Q, as a trained retriever does
            for i in range(5):  # warm-up
                select_cases(ctx, QUERIES[i % 3].format(i=i))
            samples = []
            for i in range(args.queries):
                t0 = time.perf_counter()
                chosen = select_cases(ctx, QUERIES[i % 3].format(i=i))
                samples.append(time.perf_counter() - t0)
            assert len(chosen) == ctx.top_k
            p50, p95 = percentiles(samples)
            rows.append((size, p50, p95))
            print(f"two-stage  {size:>7} cases  p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  (bank filled in {load_s:.1f} s)",
                  flush=True)
            if size == 1000:
                naive = naive_latency(ctx, bank, args.naive_queries)
                print(f"naive      {size:>7} cases  p50 {naive[0]:8.2f} ms  p95 {naive[1]:8.2f} ms  "
                      f"(encodes every case at each query)", flush=True)
                print(f"ratio naive / two-stage at 1k cases (p50): {naive[0] / p50:.1f}x", flush=True)


def naive_latency(ctx: Context, bank, queries: int) -> tuple[float, float]:
    """The original design: every case's task and plan re-encoded and scored at each query."""
    cases = bank.list()
    retriever = retriever_for(ctx)
    samples = []
    for i in range(queries):
        t0 = time.perf_counter()
        query = bank.encoder.encode([QUERIES[i % 3].format(i=i)])[0]
        vectors = bank.encoder.encode([c.task for c in cases] + [c.plan_text() for c in cases])
        q = retriever.q_values(query, vectors[:len(cases)], vectors[len(cases):])
        np.argsort(-q)[:ctx.top_k]
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


if __name__ == "__main__":
    main()
