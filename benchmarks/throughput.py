"""Throughput with real-model latency, bulk encoding, retrieval against its floor, and the GPU.

    python benchmarks/throughput.py [--latency 1.0] [--levels 1 4 8 16] [--sizes 1000 10000 100000]
                                    [--cases memory.jsonl] [--parts concurrency,import,retrieval,gpu]

Every figure and ratio comes from this one run:

1. **Concurrency**: a loopback OpenAI-compatible server (`tests/fixtures/model_servers.py`, persona
   `slow`, in its own process) answers every request after `--latency` seconds, as planner,
   executor and judge; `memento run --tasks FILE --concurrency N` runs max(16, 4N) tasks through
   one graph at each level. Tasks per minute after the warm-up, and the ratio to N times the
   sequential rate (the target is 0.7 up to N = 16).
2. **Import**: `CaseBank.write_all` (what `memento cases import` calls) on 1,278 cases (the
   original `memory.jsonl` with `--cases`, else tasks made from the packaged DeepResearcher
   questions): cases/s, and the encoding inside it (texts/s) against the encoder's floor: the
   same model, tokenised once, in length-sorted batches of 64, written here without any of
   memento's code.
3. **Retrieval**: similarity retrieval with the query embedding given (`select_for_query`: the
   nearest candidates, one per source task, the K shown) against a raw HNSW query for the same
   number of ids (`include=[]`) on the same collection, at each bank size (random unit vectors).
4. **GPU**: on CUDA, the encoder's bulk path (bf16, length-sorted batches of 512) against fp32
   in file order, texts/s and the cosine between them; without a GPU the part says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository, for tests.fixtures
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np  # noqa: E402

ORIGINAL = ROOT / "tests" / "fixtures" / "memento-original" / "deepresearcher.jsonl"
SERVER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from tests.fixtures.model_servers import ModelServer
server = ModelServer("slow", delay=float(sys.argv[1])).__enter__()
print(server.url, flush=True)
time.sleep(1e9)
"""


def part_concurrency(levels: list[int], latency: float, folder: Path) -> list[dict]:
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(latency), str(ROOT)], stdout=subprocess.PIPE,
                              text=True)
    url = server.stdout.readline().strip()
    rows = []
    try:
        for n in levels:
            count = max(16, 4 * n)
            tasks = folder / f"tasks-{n}.jsonl"
            tasks.write_text("".join(json.dumps({"id": f"t{i}", "question": f"What is 6 * 7? (order {n}-{i})",
                                                 "answer": "42"}) + "\n" for i in range(count)), encoding="utf-8")
            options = [x for role in ("planner", "executor", "judge")
                       for x in (f"--{role}-model", "openai-compatible:m", f"--{role}-base-url", url)]
            done = subprocess.run([sys.executable, "-m", "memento.cli.main", "run", "--tasks", str(tasks), "--out",
                                   str(folder / f"results-{n}.jsonl"), "--concurrency", str(n), "--data-dir",
                                   str(folder / f"data-{n}"), "--json", *options], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(f"concurrency {n} failed: {done.stderr[-2000:]}")
            report = json.loads(done.stdout)
            rows.append({"concurrency": n, "tasks": count, "done": report["done"], "warmup_s": report["warmup_s"],
                         "wall_s": report["wall_s"], "tasks_per_minute": report["tasks_per_minute"]})
    finally:
        server.kill()
        server.wait()
    base = rows[0]["tasks_per_minute"] / rows[0]["concurrency"]
    for row in rows:
        row["speedup"] = round(row["tasks_per_minute"] / base, 2)
        row["of_ideal"] = round(row["speedup"] / row["concurrency"], 2)
    return rows


def _original_cases(path: str | None) -> list:
    from memento.memory.case import Case
    from memento.memory.interchange import read_case_file

    if path:
        return list({c.id: c for c in read_case_file(path, 20000)}.values())
    questions = [json.loads(line)["question"] for line in ORIGINAL.read_text(encoding="utf-8").splitlines()]
    return [Case(id=f"q{i}", task=q, plan=[f"Search for the facts the question asks about ({i}).",
                                           "Read the best sources and answer."], reward=float(i % 2))
            for i, q in enumerate(questions[:1278])]


def floor_texts_per_second(texts: list[str], batch: int = 64) -> float:
    """The model alone: tokenised once, length-sorted batches, mean pooling; nothing of memento's."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from memento.memory.encoder import resolve_encoder_path

    path = resolve_encoder_path("all-MiniLM-L6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    started = time.perf_counter()
    tokens = tokenizer(texts, truncation=True, max_length=256)
    rows = [{k: tokens[k][i] for k in tokens.keys()} for i in range(len(texts))]
    order = sorted(range(len(texts)), key=lambda i: len(rows[i]["input_ids"]))
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            padded = tokenizer.pad([rows[i] for i in order[start:start + batch]], return_tensors="pt")
            hidden = model(**padded).last_hidden_state
            mask = padded["attention_mask"].unsqueeze(-1).float()
            torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    return len(texts) / (time.perf_counter() - started)


def part_import(cases_path: str | None, folder: Path) -> dict:
    from memento.graph import Context
    from memento.memory.resources import case_bank_for

    cases = _original_cases(cases_path)
    texts = list(dict.fromkeys([c.task for c in cases] + [c.plan_text() for c in cases]))
    floor = floor_texts_per_second(texts)
    bank = case_bank_for(Context(data_dir=str(folder / "import")))
    bank.encoder.encode(["load the weights first"])
    encoding = []
    plain = bank.encoder.encode

    def timed(batch: list[str]) -> np.ndarray:  # the import's own encoder calls, timed where they run
        t0 = time.perf_counter()
        try:
            return plain(batch)
        finally:
            encoding.append((time.perf_counter() - t0, len(batch)))

    bank.encoder.encode = timed
    started = time.perf_counter()
    try:
        bank.write_all(cases)
    finally:
        del bank.encoder.encode
    seconds = time.perf_counter() - started
    encode_s = sum(t for t, _ in encoding)
    encoded = sum(n for _, n in encoding)
    return {"cases": len(cases), "texts": len(texts), "import_cases_per_s": round(len(cases) / seconds, 1),
            "import_encoding_texts_per_s": round(encoded / encode_s, 1), "floor_texts_per_s": round(floor, 1),
            "ratio": round(encoded / encode_s / floor, 2), "encoding_share": round(encode_s / seconds, 2),
            "source": cases_path or "DeepResearcher questions (packaged)"}


def part_retrieval(sizes: list[int], queries: int, folder: Path) -> list[dict]:
    from memento.graph import Context
    from memento.memory.case import Case
    from memento.memory.resources import case_bank_for
    from memento.nodes.retrieve_cases import select_for_query

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        ctx = Context(data_dir=str(folder / f"bank-{size}"), retrieval_mode="similarity")
        bank = case_bank_for(ctx)
        for start in range(0, size, 5000):
            n = min(5000, size - start)
            cases = [Case(id=f"c{start + i}", task=f"synthetic task {start + i}", plan=[f"step {start + i}"],
                          reward=float(rng.random() < 0.6)) for i in range(n)]
            vectors = rng.normal(size=(2, n, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
            bank.put_embedded(cases, vectors[0], vectors[1])
        probes = rng.normal(size=(queries, 384)).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        fetched = max(ctx.candidates, ctx.top_k)
        raw, ours = [], []
        collection = bank._cases._collection
        for q in probes[:5]:  # warm both paths
            collection.query(query_embeddings=[q], n_results=fetched, include=[])
            select_for_query(ctx, bank, "synthetic query", q)
        for q in probes:  # interleaved, so both see the same machine
            t0 = time.perf_counter()
            collection.query(query_embeddings=[q], n_results=fetched, include=[])
            t1 = time.perf_counter()
            shown = select_for_query(ctx, bank, "synthetic query", q)
            t2 = time.perf_counter()
            raw.append(t1 - t0)
            ours.append(t2 - t1)
            assert len(shown) == ctx.top_k
        rows.append({"cases": size, "raw_hnsw_ms": round(statistics.median(raw) * 1000, 2),
                     "similarity_ms": round(statistics.median(ours) * 1000, 2),
                     "ratio": round(statistics.median(ours) / statistics.median(raw), 2), "fetched": fetched})
    return rows


def part_gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None, "note": "no CUDA device on this machine: the bf16 path was not measured here"}
    from memento.memory.encoder import TextEncoder

    texts = [json.loads(line)["question"] for line in ORIGINAL.read_text(encoding="utf-8").splitlines()]
    texts = (texts * 4)[:12000]
    texts = [f"{t} ({i})" for i, t in enumerate(texts)]  # all distinct
    fast = TextEncoder(device="cuda")
    fast.encode(texts[:1000])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    vectors = fast.encode(texts)
    torch.cuda.synchronize()
    fast_rate = len(texts) / (time.perf_counter() - t0)
    slow = TextEncoder(device="cuda", half_on_gpu=False, gpu_batch_size=64)
    slow.encode(texts[:1000])
    t0 = time.perf_counter()
    # fp32, batches of 64 taken in file order (the old path's shape): the reference and the baseline
    reference = np.concatenate([slow.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    torch.cuda.synchronize()
    slow_rate = len(texts) / (time.perf_counter() - t0)
    cosine = (vectors * reference).sum(axis=1)
    return {"gpu": torch.cuda.get_device_name(0), "bf16_sorted_texts_per_s": round(fast_rate),
            "fp32_file_order_texts_per_s": round(slow_rate), "ratio": round(fast_rate / slow_rate, 1),
            "min_cosine": round(float(cosine.min()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the model server takes per request")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cases", help="the original memory.jsonl (default: cases made from packaged questions)")
    parser.add_argument("--parts", default="concurrency,import,retrieval,gpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="memento-throughput-") as tmp:
        folder = Path(tmp)
        if "concurrency" in parts:
            result["concurrency"] = part_concurrency(args.levels, args.latency, folder)
        if "import" in parts:
            result["import"] = part_import(args.cases, folder)
        if "retrieval" in parts:
            result["retrieval"] = part_retrieval(args.sizes, args.queries, folder)
        if "gpu" in parts:
            result["gpu"] = part_gpu()
    if args.json:
        print(json.dumps(result))
        return
    for row in result.get("concurrency", []):
        print(f"concurrency {row['concurrency']:>2}: {row['tasks']} tasks, {row['tasks_per_minute']:>6} tasks/min "
              f"(warm-up {row['warmup_s']} s), {row['speedup']}x sequential = {row['of_ideal']} of {row['concurrency']}x")
    if "import" in result:
        r = result["import"]
        print(f"import: {r['import_cases_per_s']} cases/s; its encoding {r['import_encoding_texts_per_s']} texts/s against "
              f"the encoder's sorted-batch floor {r['floor_texts_per_s']} texts/s: {r['ratio']} (encoding "
              f"{r['encoding_share']:.0%} of the import; {r['cases']} cases, {r['texts']} texts; {r['source']})")
    for r in result.get("retrieval", []):
        print(f"retrieval at {r['cases']:>6} cases: similarity {r['similarity_ms']} ms, raw HNSW {r['raw_hnsw_ms']} ms "
              f"({r['fetched']} ids): {r['ratio']}x")
    if "gpu" in result:
        print(f"gpu: {json.dumps(result['gpu'])}")
    print(f"machine: {result['cores']} cores")


if __name__ == "__main__":
    main()
