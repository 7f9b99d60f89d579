"""The case bank as a LangGraph store, and a LangGraph store as the case bank.

`CaseStore` is a `BaseStore` over Memento's Chroma case bank, so any LangGraph agent given it
(`graph.compile(store=CaseStore(bank))`, then `runtime.store` or `get_store()` in its nodes) reads
the cases Memento's runs wrote. The namespace `("memento", "cases")` holds one item per case:
the key is the case id, the value the case as a JSON-able dict (`Case.model_dump()`, plus its
`utility` when a run has credited it). A `search` with a query ranks cases by the bank's own
encoder (score: the cosine similarity), one without lists them oldest first; a `put` is checked
as a `Case` and written through `CaseBank.write`, so it is embedded like any case; a `put` of
None deletes. Nothing else lives here: a put elsewhere is refused, a get or search elsewhere finds
nothing.

`StoreCaseBank` is the other direction: the part of the `CaseBank` interface the graph's nodes
use, over any `BaseStore` (an `InMemoryStore` or a Postgres store with an `index`), so
`build_graph(store=...)` keeps its cases there. The cases go into the same namespace, with only
their `task` indexed; retrieval is the store's own semantic search of the task text (similarity:
the store's score). The task and plan embeddings the parametric retriever reads are computed by
Memento's encoder from the texts, and kept per case id.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from pydantic import ValidationError

from memento.memory.case import Case, RetrievedCase, utc_now
from memento.memory.case_bank import UTILITY_KEY, Candidates, CaseBank, CaseBankError
from memento.memory.encoder import TextEncoder
from memento.memory.provenance import MemoryAccess
from memento.memory.retrieval import moved_utility

if TYPE_CHECKING:
    from memento.graph.context import Context

NAMESPACE: tuple[str, ...] = ("memento", "cases")
CASE_FIELDS = frozenset(Case.model_fields)
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
PAGE = 500  # items per page when a store is read whole (count, list)
SCOPED_FETCH = 4  # a scoped search asks the store for this many times the candidates it keeps
EPOCH = datetime.fromtimestamp(0, timezone.utc)


def _timestamp(text: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return EPOCH  # a case stored without a readable time
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def case_value(case: Case, utility: float | None = None) -> dict[str, Any]:
    """A case as a store item's value: its fields, and its utility when it has one."""
    value = case.model_dump(include=set(CASE_FIELDS))
    if utility is not None:
        value[UTILITY_KEY] = float(utility)
    return value


def _utility_of(value: Mapping[str, Any]) -> float | None:
    utility = value.get(UTILITY_KEY)
    if utility is None:
        return None
    if isinstance(utility, bool) or not isinstance(utility, (int, float)) or not 0.0 <= utility <= 1.0:
        raise ValueError(f"utility must be a number from 0 to 1, got {utility!r}")
    return float(utility)


def parse_case(key: str, value: Any) -> tuple[Case, float | None]:
    """A store value checked as a case: (the case, its utility or None). A value that is not a case
    raises ValueError with one line naming the problem."""
    if not isinstance(value, Mapping):
        raise ValueError(f"a case must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - CASE_FIELDS - {UTILITY_KEY})
    if unknown:
        raise ValueError(f"not a case field: {', '.join(map(str, unknown))} "
                         f"(a case has {', '.join(Case.model_fields)}, and may have {UTILITY_KEY})")
    if value.get("id", key) != key:
        raise ValueError(f"the value's id {value['id']!r} is not its key {key!r}")
    try:
        case = Case.model_validate({**{k: v for k, v in value.items() if k != UTILITY_KEY}, "id": key})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
                             for error in exc.errors())
        raise ValueError(f"not a valid case: {' '.join(problems.split())}") from None
    return case, _utility_of(value)


def _compare(value: Any, operator: str, wanted: Any) -> bool:
    if operator == "$eq":
        return value == wanted
    if operator == "$ne":
        return value != wanted
    if value is None or isinstance(value, (dict, list)):
        return False
    try:
        return {"$gt": value > wanted, "$gte": value >= wanted, "$lt": value < wanted, "$lte": value <= wanted}[operator]
    except TypeError:  # a number against a text: no order, no match
        return False


def check_filter(filter: Mapping[str, Any] | None) -> None:
    for field, wanted in (filter or {}).items():
        if isinstance(wanted, Mapping):
            unknown = [op for op in wanted if op not in FILTER_OPERATORS]
            if unknown:
                raise ValueError(f"filter on {field!r}: unsupported operator {unknown[0]!r} "
                                 f"(supported: {', '.join(FILTER_OPERATORS)})")


def matches(value: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Whether a case's value passes a filter on its top-level fields: `{"field": x}` is equality,
    `{"field": {"$gte": x, "$lt": y}}` applies each operator ($eq, $ne, $gt, $gte, $lt, $lte)."""
    for field, wanted in (filter or {}).items():
        got = value.get(field)
        if isinstance(wanted, Mapping):
            if not all(_compare(got, op, arg) for op, arg in wanted.items()):
                return False
        elif got != wanted:
            return False
    return True


def _within(namespace: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    return tuple(prefix) == namespace[:len(prefix)]


def _namespace_matches(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    path = tuple(condition.path)
    if len(path) > len(namespace):
        return False
    part = namespace[:len(path)] if condition.match_type == "prefix" else namespace[len(namespace) - len(path):]
    return all(p == "*" or p == n for p, n in zip(path, part))


class CaseStore(BaseStore):
    """Memento's case bank, read and written as a LangGraph store (see the module's text).

    `read_only`: refuse every put and delete (for a store that others reach, such as a server's)."""

    def __init__(self, bank: CaseBank, *, read_only: bool = False) -> None:
        self.bank = bank
        self.read_only = read_only

    @classmethod
    def from_context(cls, ctx: Context, *, read_only: bool = False) -> "CaseStore":
        """The store over the case bank that the settings point at (the one Memento's runs use)."""
        from memento.memory.resources import case_bank_for

        return cls(case_bank_for(ctx), read_only=read_only)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._run(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        # Chroma and the encoder block: the batch runs on a worker thread, not the event loop.
        return await asyncio.to_thread(self.batch, list(ops))

    def _run(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            return self._get(tuple(op.namespace), op.key)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, PutOp):
            return self._put(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise ValueError(f"CaseStore does not support the operation {type(op).__name__}")

    def _item(self, case: Case, utility: float | None, score: float | None = None,
              scored: bool = False) -> Item:
        fields = dict(namespace=NAMESPACE, key=case.id, value=case_value(case, utility),
                      created_at=_timestamp(case.created_at), updated_at=_timestamp(case.updated_at))
        return SearchItem(**fields, score=score) if scored else Item(**fields)

    def _get(self, namespace: tuple[str, ...], key: str) -> Item | None:
        if namespace != NAMESPACE:
            return None
        case = self.bank.get(key)
        if case is None:
            return None
        return self._item(case, self.bank.utilities([key]).get(key))

    def _put(self, op: PutOp) -> None:
        namespace = tuple(op.namespace)
        if namespace != NAMESPACE:
            raise ValueError(f"CaseStore holds only Memento's cases, under {NAMESPACE}: "
                             f"cannot put {op.key!r} into {namespace}")
        if self.read_only:
            raise ValueError(f"this CaseStore is read-only: cannot {'delete' if op.value is None else 'put'} "
                             f"case {op.key!r}")
        if op.value is None:
            self.bank.delete([op.key])
            return None
        case, utility = parse_case(op.key, op.value)
        self.bank.write(case)
        if utility is not None:  # a utility given with the case is stored as it is (a full step)
            self.bank.update_utilities({case.id: utility}, 1.0)
        return None

    def _search(self, op: SearchOp) -> list[SearchItem]:
        check_filter(op.filter)
        if not _within(NAMESPACE, tuple(op.namespace_prefix)) or op.limit <= 0:
            return []
        wanted = max(op.offset, 0) + op.limit
        if op.query:
            query = self.bank.encoder.encode([op.query])[0]
            total = self.bank.count()
            n = wanted
            while True:  # fetch more candidates until the filter leaves enough, or the bank is spent
                found = self.bank.candidates(query, n, query_text=op.query, vectors=False).cases
                items = [self._item(c, c.utility, c.similarity, scored=True) for c in found]
                kept = [item for item in items if matches(item.value, op.filter)]
                if len(kept) >= wanted or n >= total or not op.filter:
                    break
                n = min(total, n * 4)
        else:
            cases = self.bank.list()
            utilities = self.bank.utilities([c.id for c in cases])
            items = [self._item(c, utilities.get(c.id), scored=True) for c in cases]
            kept = [item for item in items if matches(item.value, op.filter)]
        return kept[max(op.offset, 0):wanted]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        found = [NAMESPACE] if all(_namespace_matches(NAMESPACE, c) for c in op.match_conditions or ()) else []
        if op.max_depth is not None:
            found = list(dict.fromkeys(ns[:op.max_depth] for ns in found))
        return found[op.offset:op.offset + op.limit]


def make_store() -> CaseStore:
    """The store a LangGraph server that serves Memento can be given in `langgraph.json`:
    `"store": {"path": "memento.memory.store.make_store"}` (this langgraph-api version splits a
    module path at its last dot, so `module:function` does not load). It is the operator's case
    bank, from the settings the served graph reads (`MEMENTO_CONFIG`, `MEMENTO_DATA_DIR`), and
    read-only: callers of the server may read cases, never write or delete them.

    Such a store replaces the server's own: what callers put in their own namespaces (where
    `memento.graph.auth` places them) is refused, and since a caller's namespace starts with its
    identity, only graphs served beside Memento (through `get_store()`) reach the cases. So the
    shipped `langgraph.json` does not name it; an operator who wants that adds the line."""
    from memento.graph.server import operator_context

    return CaseStore.from_context(operator_context(), read_only=True)


class CaseVectors:
    """Task and plan embeddings by case id (LRU), each valid while the case's texts are unchanged."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, tuple[str, str, np.ndarray, np.ndarray]] = OrderedDict()

    def of(self, cases: list[Case], encoder: TextEncoder) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            known = {c.id: self.entries[c.id] for c in cases if c.id in self.entries
                     and self.entries[c.id][:2] == (c.task, c.plan_text())}
        missing = list({c.id: c for c in cases if c.id not in known}.values())
        if missing:
            vectors = encoder.encode([c.task for c in missing] + [c.plan_text() for c in missing])
            for i, case in enumerate(missing):
                known[case.id] = (case.task, case.plan_text(), vectors[i], vectors[len(missing) + i])
        with self.lock:
            for case in cases:
                self.entries[case.id] = known[case.id]
                self.entries.move_to_end(case.id)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        dim = encoder.dim if not cases else len(known[cases[0].id][2])
        tasks = np.asarray([known[c.id][2] for c in cases], dtype=np.float32).reshape(len(cases), dim)
        plans = np.asarray([known[c.id][3] for c in cases], dtype=np.float32).reshape(len(cases), dim)
        return tasks, plans


class StoreCaseBank:
    """The case bank's interface for the graph's nodes (`encoder`, `candidates`, `embeddings`,
    `write`, `update_utilities`, `count`, `get`, `list`, `delete`), over any LangGraph store.

    The store needs a vector index (`index={"dims": ..., "embed": ...}`) for retrieval: the cases
    are put with `index=["task"]` and found by the store's search of the query's text."""

    def __init__(self, store: BaseStore, encoder: TextEncoder, *, namespace: tuple[str, ...] = NAMESPACE,
                 vectors: CaseVectors | None = None) -> None:
        self.store = store
        self.encoder = encoder
        self.namespace = tuple(namespace)
        self._vectors = vectors if vectors is not None else CaseVectors()

    def _parse(self, item: Item) -> tuple[Case, float | None]:
        try:
            return parse_case(item.key, item.value)
        except ValueError as exc:
            raise CaseBankError(f"the store's item {item.key!r} in {self.namespace} is not a case ({exc}): "
                                "delete it or put a case there") from None

    def _items(self) -> list[Item]:
        items: list[Item] = []
        while True:
            page = self.store.search(self.namespace, limit=PAGE, offset=len(items))
            items.extend(page)
            if len(page) < PAGE:
                return [item for item in items if tuple(item.namespace) == self.namespace]

    def count(self) -> int:
        return len(self._items())

    def get(self, case_id: str) -> Case | None:
        item = self.store.get(self.namespace, case_id)
        return None if item is None else self._parse(item)[0]

    def list(self, limit: int | None = None, offset: int = 0) -> list[Case]:
        """Cases, oldest first."""
        cases = sorted((self._parse(item)[0] for item in self._items()), key=lambda c: (c.created_at, c.id))
        return cases[offset:None if limit is None else offset + limit]

    def write(self, case: Case) -> Case:
        """Insert or replace a case by id; a rewrite keeps the case's first time and its utility."""
        item = self.store.get(self.namespace, case.id)
        existing, utility = self._parse(item) if item is not None else (None, None)
        stamped = case.model_copy(update={
            "created_at": existing.created_at if existing else case.created_at, "updated_at": utc_now()})
        self.store.put(self.namespace, case.id, case_value(stamped, utility), index=["task"])
        return stamped

    def write_many(self, cases: list[Case]) -> list[Case]:
        return [self.write(case) for case in cases]

    def delete(self, case_ids: list[str]) -> list[str]:
        """Delete the given ids; return those that existed."""
        found = [i for i in case_ids if self.store.get(self.namespace, i) is not None]
        for case_id in found:
            self.store.delete(self.namespace, case_id)
        return found

    def candidates(self, query_embedding: np.ndarray, n: int, query_text: str | None = None,
                   vectors: bool = True, access: MemoryAccess | None = None) -> Candidates:
        """The n cases whose tasks the store finds nearest to `query_text`, best first, with their task
        and plan embeddings (Memento's encoder). A store cannot search by a vector: the text is needed.
        With `access`, only the cases it may read: the store is asked for more and the rest dropped
        here (a store's filter cannot say "one of these scopes", nor match cases stored without one)."""
        dim = int(np.asarray(query_embedding).shape[-1])
        empty = Candidates([], np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float32))
        if n <= 0:
            return empty
        if not query_text:
            raise CaseBankError("a case bank over a LangGraph store searches by the query's text: "
                                "pass query_text to candidates")
        hits = [hit for hit in self.store.search(self.namespace, query=query_text,
                                                 limit=n if access is None else min(SCOPED_FETCH * n, PAGE))
                if tuple(hit.namespace) == self.namespace]
        scored = [hit for hit in hits if hit.score is not None]
        if hits and not scored:
            raise CaseBankError(f"the store {type(self.store).__name__} has no vector index for the cases: "
                                "create it with index={'dims': ..., 'embed': ...} to use it as the case bank")
        cases = []
        for hit in scored:
            case, utility = self._parse(hit)
            if access is None or access.may_read(case):
                cases.append(RetrievedCase(**case.model_dump(), similarity=round(float(hit.score), 4), utility=utility))
        cases = cases[:n]
        if not cases or not vectors:
            return Candidates(cases, empty.task_embeddings, empty.plan_embeddings)
        tasks, plans = self._vectors.of(cases, self.encoder)
        return Candidates(cases, tasks, plans)

    def embeddings(self, case_ids: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids found, task embeddings, plan embeddings) for the given ids, in their order."""
        cases = [case for case in (self.get(i) for i in case_ids) if case is not None]
        if not cases:
            empty = np.zeros((0, self.encoder.dim), np.float32)
            return [], empty, empty
        tasks, plans = self._vectors.of(cases, self.encoder)
        return [c.id for c in cases], tasks, plans

    def utilities(self, case_ids: list[str]) -> dict[str, float]:
        found = {}
        for case_id in case_ids:
            item = self.store.get(self.namespace, case_id)
            if item is not None and (utility := self._parse(item)[1]) is not None:
                found[case_id] = utility
        return found

    def update_utilities(self, rewards: dict[str, float], rate: float) -> dict[str, float]:
        """Move each given case's utility one step toward its reward (`U <- (1 - rate) U + rate r`,
        from 0.5); cases no longer in the store are skipped. Returns the new values."""
        moved = {}
        for case_id, reward in rewards.items():
            item = self.store.get(self.namespace, case_id)
            if item is None:
                continue
            case, utility = self._parse(item)
            moved[case_id] = moved_utility(utility, reward, rate)
            self.store.put(self.namespace, case_id, case_value(case, moved[case_id]), index=["task"])
        return moved
