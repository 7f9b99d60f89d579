"""Parametric case memory: a small torch network Q(task, case) that learns which cases help.

Q is the expected reward of planning with a case (paper arXiv 2508.16153, section 4.2). Its
inputs are encoder features the case bank already stores (the case's task and plan embeddings),
the query task's embedding, and the hashed words in which the two tasks differ (`lexical`), so
scoring a candidate costs one small network pass, never an encoder pass. Training is soft
Q-learning on transitions (task, case, reward): with discount 0 (the paper's single-step planner)
the TD target is the reward and the loss is binary cross-entropy, plus a pairwise ranking term
between the cases of one run (what retrieval uses is the order of cases for one task, which a
shift of every Q leaves unchanged); with a discount above 0 the target adds the soft value of the
next state, read from a target network.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
import threading
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from memento.graph.errors import InputError
from memento.memory.device import resolve_device
from memento.memory.lexical import BUCKETS, PAD, WIDTH

_RNG_LOCK = threading.RLock()
# 2: the similarity prior (kappa, midpoint) and the cosine features; 3: the lexical term, the
# fixed prior online, episodes in the replay buffer
FORMAT_VERSION = 3
MAX_PER_EPISODE = 64
# The fallback to similarity: each recorded run's evidence weighs this much less after every later
# run, and the learned ranking is used once it has won this many more (decayed) disagreements.
GATE_DECAY = 0.97
GATE_MARGIN = 1.0


class RetrieverError(InputError, RuntimeError):
    """A retriever checkpoint that cannot be used as configured."""


@dataclass
class RetrieverSettings:
    hidden: int = 128
    dropout: float = 0.3
    lr: float = 5e-4
    weight_decay: float = 1e-2
    batch_size: int = 32
    steps_per_update: int = 8
    buffer_size: int = 5000
    discount: float = 0.0
    alpha: float = 1.0
    target_sync: int = 25
    seed: int = 0
    lexical: bool = True  # the hashed word-mismatch term
    word_pairs: bool = True  # in it, the hashed pairs (a word only the task says, a word only the case says)
    pairwise: float = 1.0  # weight of the within-run ranking loss (0: pointwise BCE only)
    prior_lr: float = 0.0  # learning rate of the similarity prior's kappa and midpoint (0: fixed)
    lexical_lr: float = 0.05  # learning rate of the word weights: sparse, each seen in few runs
    lexical_decay: float = 0.0  # their weight decay
    metric_lr: float = 0.02  # learning rate of the learned distance's weights, one per embedding dimension
    embedding_mlp: bool = False  # the MLP over the embeddings' features: on for offline training only
    scaled_features: bool = True  # the MLP's inputs scaled to about 1 (format 2 networks were trained unscaled)


class QNetwork(nn.Module):
    """Scores (task, case) pairs; returns logits, Q = sigmoid(logit) in (0, 1).

    The logit is a similarity prior plus learned corrections, each starting at zero, so an
    untrained network ranks cases as similarity retrieval does (embeddings are unit vectors: the
    cosine is the dot product):

    - the prior `kappa * (cos(t, c) - m)`, 10 and 0.5, fixed in online learning, so a few rewards
      cannot erase what similarity already knows about related and unrelated cases;
    - `lexical`: a weight per hashed word in which the two tasks differ, per case outcome (a
      mismatch on a word that has misled before costs value), and a bias per outcome;
    - `metric`: a learned squared distance `sum_i w_i dim (t_i - c_i)^2`, `w_i >= 0`: it can only
      add to the cost of differing along the directions rewards say matter, never make an unrelated
      case look related;
    - with `head`, an MLP over `[t, c, p, t*c, t*p, |t-c|, cos(t, c), cos(t, p)]`, for offline
      training on thousands of labelled pairs (online, from a few labels a run, it adds noise)."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1, lexical: bool = True,
                 head: bool = True, scaled: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.scaled = scaled
        self.head = nn.Sequential(
            nn.Linear(6 * dim + 2, hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, 1),
        ) if head else None
        if self.head is not None:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        self.kappa = nn.Parameter(torch.tensor(10.0))
        self.midpoint = nn.Parameter(torch.tensor(0.5))
        self.lexical = nn.Embedding(BUCKETS + 1, 1, padding_idx=PAD) if lexical else None
        if self.lexical is not None:
            nn.init.zeros_(self.lexical.weight)
        # The square roots of the metric's weights, started near 0 (a square has no gradient at 0).
        self.metric = nn.Parameter(torch.full((dim,), 1e-3))

    def forward(self, task: torch.Tensor, case_task: torch.Tensor, case_plan: torch.Tensor,
                mismatch: torch.Tensor | None = None) -> torch.Tensor:
        similarity = (task * case_task).sum(-1, keepdim=True)
        logit = self.kappa * (similarity.squeeze(-1) - self.midpoint)
        logit = logit - (self.dim * (task - case_task) ** 2 * self.metric ** 2).sum(-1)
        if self.head is not None:
            # Unit vectors have components of about 1/sqrt(dim) and products of about 1/dim (1e-3
            # for MiniLM): scaled back to about 1, so the MLP learns from them at the pace of the rest.
            root, dim = (self.dim ** 0.5, self.dim) if self.scaled else (1.0, 1.0)
            plan_similarity = (task * case_plan).sum(-1, keepdim=True)
            features = torch.cat([root * task, root * case_task, root * case_plan, dim * task * case_task,
                                  dim * task * case_plan, root * (task - case_task).abs(), similarity,
                                  plan_similarity], dim=-1)
            logit = logit + self.head(features).squeeze(-1)
        if self.lexical is not None and mismatch is not None:
            logit = logit + self.lexical(mismatch.long()).sum(dim=(-2, -1))
        return logit

    def prior_parameters(self) -> list[nn.Parameter]:
        return [self.kappa, self.midpoint]


@dataclass
class ReplayBuffer:
    """A ring buffer of transitions, stored as float16 to keep it small on disk."""

    dim: int
    capacity: int
    next_width: int = 0  # cases per next state; 0 when the discount is 0 (no next states kept)
    size: int = 0
    cursor: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.arrays:
            c, d, m = self.capacity, self.dim, self.next_width
            self.arrays = {
                "task": np.zeros((c, d), np.float16), "case_task": np.zeros((c, d), np.float16),
                "case_plan": np.zeros((c, d), np.float16), "reward": np.zeros(c, np.float32),
                "mismatch": np.full((c, WIDTH), PAD, np.int16), "episode": np.full(c, -1, np.int64),
                "weight": np.zeros(c, np.float32), "has_next": np.zeros(c, bool),
                "next_task": np.zeros((c, d if m else 0), np.float16),
                "next_case_task": np.zeros((c, m, d), np.float16),
                "next_case_plan": np.zeros((c, m, d), np.float16), "next_count": np.zeros(c, np.int16),
            }

    def add(self, task: np.ndarray, case_tasks: np.ndarray, case_plans: np.ndarray, rewards: np.ndarray,
            weights: np.ndarray, mismatch: np.ndarray, episode: int) -> list[int]:
        slots = []
        for i in range(len(case_tasks)):
            slot = self.cursor
            a = self.arrays
            a["task"][slot], a["case_task"][slot], a["case_plan"][slot] = task, case_tasks[i], case_plans[i]
            a["reward"][slot], a["weight"][slot], a["has_next"][slot] = rewards[i], weights[i], False
            a["mismatch"][slot], a["episode"][slot] = mismatch[i], episode
            slots.append(slot)
            self.cursor = (self.cursor + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)
        return slots

    def link_next(self, slots: list[int], task: np.ndarray, case_tasks: np.ndarray, case_plans: np.ndarray) -> None:
        """Give earlier transitions their next state: the next task and the cases it was shown."""
        m = min(self.next_width, len(case_tasks))
        if not self.next_width or m == 0:
            return
        a = self.arrays
        for slot in slots:
            a["next_task"][slot] = task
            a["next_case_task"][slot, :m], a["next_case_plan"][slot, :m] = case_tasks[:m], case_plans[:m]
            a["next_count"][slot], a["has_next"][slot] = m, True

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """About `batch` transitions, whole runs at a time: runs are drawn at random and every
        transition of each comes with it, so the ranking loss can compare the cases of one run."""
        episodes = self.arrays["episode"][:self.size]
        picked: list[np.ndarray] = []
        taken = 0
        for slot in rng.integers(0, self.size, size=min(batch, self.size)):
            same = np.flatnonzero(episodes == episodes[slot])
            picked.append(same)
            taken += len(same)
            if taken >= batch:
                break
        idx = np.unique(np.concatenate(picked))
        return {k: v[idx] for k, v in self.arrays.items()}


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=device)


def _ids(array: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if array is None else torch.as_tensor(np.asarray(array, dtype=np.int64), device=device)


class QRetriever:
    """The network, its target copy, the optimiser and the replay buffer, on one device."""

    def __init__(self, dim: int, encoder: str, device: str = "cpu", settings: RetrieverSettings | None = None) -> None:
        self.settings = settings or RetrieverSettings()
        self.encoder = encoder
        self.dim = dim
        self.device = resolve_device(device)
        # Its own random streams (initial weights, dropout), apart from the process's: the same
        # transitions train the same network whatever else runs in the process.
        self._cpu_rng = torch.Generator().manual_seed(self.settings.seed).get_state()
        self._cuda_rng: torch.Tensor | None = None
        with self.own_rng():
            self.network = QNetwork(dim, self.settings.hidden, self.settings.dropout,
                                    lexical=self.settings.lexical, head=self.settings.embedding_mlp,
                                    scaled=self.settings.scaled_features).to(self.device)
        self.target = copy.deepcopy(self.network).eval() if self.settings.discount > 0 else None
        prior = self.network.prior_parameters()
        lexical = list(self.network.lexical.parameters()) if self.network.lexical is not None else []
        metric = [self.network.metric]
        own = {id(p) for p in [*prior, *lexical, *metric]}
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in self.network.parameters() if id(p) not in own]},
             {"params": prior, "lr": self.settings.prior_lr, "weight_decay": 0.0},
             {"params": lexical, "lr": self.settings.lexical_lr, "weight_decay": self.settings.lexical_decay},
             {"params": metric, "lr": self.settings.metric_lr, "weight_decay": 0.0}],
            lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        self.buffer = ReplayBuffer(dim, self.settings.buffer_size,
                                   next_width=8 if self.settings.discount > 0 else 0)
        self.updates = 0
        self.version = 0  # the learning log's version these weights are (0: not from the log)
        self.learned_seq = 0  # the last log row they have learned
        self.published_at = 0.0  # when that version was published (two forks of one number differ)
        self.episode_count = 0
        self.last_episode: list[int] = []
        self.episodes: list[str] = []  # recent episode ids, so a replayed run is not learned twice
        self.rng = np.random.default_rng(self.settings.seed)
        self.lock = threading.RLock()
        # Decayed counts of the disagreements between the learned and the similarity order that each
        # got right, on runs not yet trained on (`check_ranking`): [learned, similarity].
        self.gate = [0.0, 0.0]

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run a block on this retriever's random streams, leaving the process's untouched.

        torch's generators are process-wide, so blocks of all retrievers take turns (a lock), or
        two retrievers training in two threads would draw from each other's streams."""
        cuda = self.device.type == "cuda"
        with _RNG_LOCK, torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self._cpu_rng)
            if cuda:
                if self._cuda_rng is None:
                    torch.cuda.manual_seed(self.settings.seed)
                else:
                    torch.cuda.set_rng_state(self._cuda_rng, self.device)
            try:
                yield
            finally:
                self._cpu_rng = torch.get_rng_state()
                if cuda:
                    self._cuda_rng = torch.cuda.get_rng_state(self.device)

    @property
    def trained(self) -> bool:
        """Whether any gradient step was taken (an untrained network ranks at random)."""
        return self.updates > 0

    def choose(self, q: np.ndarray, k: int, temperature: float, key: str = "", pool: int | None = None) -> np.ndarray:
        """Indices of the k cases to show, in order: drawn without replacement from the policy
        mu(c | s) = softmax(logit(Q) / temperature) over the `pool` highest-Q cases (the Gumbel
        top-k trick), the paper's maximum-entropy retrieval policy kept among the cases worth
        showing, so cases the network undervalues slightly are still shown now and then and their
        value learned, and a case far down the list never is; temperature 0 takes the k highest
        Q. The draw is seeded by the task and the number of updates so far: the same history
        gives the same choice."""
        q = np.clip(np.asarray(q, np.float64), 1e-6, 1 - 1e-6)
        scores = np.log(q) - np.log1p(-q)
        if temperature > 0 and len(q) > 1:
            eligible = np.argsort(-scores, kind="stable")[:pool] if pool else np.arange(len(q))
            rng = np.random.default_rng([self.updates, zlib.crc32(key.encode("utf-8"))])
            drawn = np.full(len(q), -np.inf)
            drawn[eligible] = scores[eligible] / temperature + rng.gumbel(size=len(eligible))
            scores = drawn
        return np.argsort(-scores, kind="stable")[:k]

    @property
    def ahead(self) -> bool:
        """Whether the learned ranking has been more often right than similarity's on held-out runs:
        until it is, retrieval keeps the similarity order (the learner knows when it does not know)."""
        return self.trained and self.gate[0] - self.gate[1] >= GATE_MARGIN

    def check_ranking(self, task: np.ndarray, case_tasks: np.ndarray, case_plans: np.ndarray, rewards: np.ndarray,
                      mismatch: np.ndarray | None = None) -> tuple[int, int]:
        """A held-out test of the learned order against similarity's on one run, before it is trained
        on: among the run's credited cases whose rewards differ, each pair the two orders rank
        differently counts one for whichever put the better case first. (Only the order counts: the
        ranking loss leaves Q uncalibrated, so a log loss would compare the wrong thing.) Returns this
        run's (learned, similarity) wins; the decayed totals decide `ahead`."""
        rewards = np.asarray(rewards, np.float64)
        won = [0.0, 0.0]
        if self.trained and len(rewards) > 1 and np.ptp(rewards) > 0:
            q = self.q_values(task, case_tasks, case_plans, mismatch).astype(np.float64)
            similarity = np.asarray(case_tasks, np.float64) @ np.asarray(task, np.float64)
            better = rewards[:, None] > rewards[None, :] + 1e-6
            learned_right = (q[:, None] > q[None, :]) & better
            similarity_right = (similarity[:, None] > similarity[None, :]) & better
            won = [float((learned_right & ~similarity_right).sum()), float((similarity_right & ~learned_right).sum())]
        with self.lock:
            self.gate = [GATE_DECAY * self.gate[0] + won[0], GATE_DECAY * self.gate[1] + won[1]]
        return won[0], won[1]

    def q_values(self, task: np.ndarray, case_tasks: np.ndarray, case_plans: np.ndarray,
                 mismatch: np.ndarray | None = None) -> np.ndarray:
        """Q for one task against n cases: a float array of shape (n,). `mismatch` holds each
        pair's hashed differing words (`lexical.mismatch_matrix`); without it the lexical term is 0."""
        if len(case_tasks) == 0:
            return np.zeros(0, np.float32)
        tasks = np.tile(np.asarray(task, np.float32), (len(case_tasks), 1))
        return self.q_values_pairs(tasks, case_tasks, case_plans, mismatch)

    def q_values_pairs(self, tasks: np.ndarray, case_tasks: np.ndarray, case_plans: np.ndarray,
                       mismatch: np.ndarray | None = None) -> np.ndarray:
        """Q for n (task, case) pairs, row by row: shape (n,)."""
        with self.lock, torch.inference_mode():
            self.network.eval()
            logits = self.network(_tensor(tasks, self.device), _tensor(case_tasks, self.device),
                                  _tensor(case_plans, self.device), _ids(mismatch, self.device))
            return torch.sigmoid(logits).float().cpu().numpy()

    def observe(self, task: np.ndarray, case_tasks: np.ndarray, case_plans: np.ndarray, reward: float | np.ndarray,
                weights: np.ndarray | None = None, episode: str | None = None,
                shown: tuple[np.ndarray, np.ndarray] | None = None, mismatch: np.ndarray | None = None) -> int:
        """Store one run's transitions: the task, each case credited, its reward (one for all, or
        one per case), and each pair's hashed differing words. `shown` (task and plan embeddings
        of every case the run was shown, when not all were credited) is the next state of the
        previous run's transitions.

        Returns how many were stored: none when `episode` was already observed (a resumed run)."""
        n = min(len(case_tasks), MAX_PER_EPISODE)
        with self.lock:
            if episode is not None:
                if episode in self.episodes:
                    return 0
                self.episodes = [*self.episodes, episode][-1000:]
            if self.last_episode:
                next_tasks, next_plans = shown if shown is not None else (case_tasks, case_plans)
                self.buffer.link_next(self.last_episode, task, next_tasks, next_plans)
            if n == 0:
                self.last_episode = []
                return 0
            weights = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)[:n]
            rewards = np.broadcast_to(np.asarray(reward, np.float32), (len(case_tasks),))[:n]
            mismatch = np.full((n, WIDTH), PAD, np.int32) if mismatch is None else np.asarray(mismatch, np.int32)[:n]
            self.last_episode = self.buffer.add(task, case_tasks[:n], case_plans[:n], rewards, weights, mismatch,
                                                self.episode_count)
            self.episode_count += 1
            return n

    def _targets(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        reward = _tensor(batch["reward"], self.device)
        gamma = self.settings.discount
        if gamma <= 0 or self.target is None or not batch["has_next"].any():
            return reward
        alpha = self.settings.alpha
        with torch.no_grad():
            nxt_cases = _tensor(batch["next_case_task"], self.device)  # (b, m, d)
            nxt_task = _tensor(batch["next_task"], self.device).unsqueeze(1).expand_as(nxt_cases)
            q_next = torch.sigmoid(self.target(nxt_task, nxt_cases, _tensor(batch["next_case_plan"], self.device)))
            counts = torch.as_tensor(batch["next_count"], device=self.device).clamp(min=1)
            mask = torch.arange(q_next.shape[1], device=self.device)[None, :] < counts[:, None]
            # Soft value alpha * log mean exp(Q / alpha) over the next state's cases: the soft
            # maximum of expected rewards, which stays within (0, 1) like Q itself.
            logits = (q_next / alpha).masked_fill(~mask, float("-inf"))
            value = alpha * (torch.logsumexp(logits, dim=1) - counts.float().log())
            has_next = torch.as_tensor(batch["has_next"], device=self.device)
        # (1 - gamma) scales the reward so the target stays an expected reward in [0, 1].
        return torch.where(has_next, (1 - gamma) * reward + gamma * value, reward)

    def train_step(self, task: torch.Tensor, case_task: torch.Tensor, case_plan: torch.Tensor,
                   target: torch.Tensor, weight: torch.Tensor, mismatch: torch.Tensor | None = None,
                   episode: torch.Tensor | None = None) -> float:
        """One gradient step: weighted BCE on every pair, plus (with `episode`) a logistic loss on
        each pair of transitions of one run whose targets differ, the better one ranked above."""
        self.network.train()
        with self.own_rng():  # dropout
            logits = self.network(task, case_task, case_plan, mismatch)
        loss = (nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).mean()
        if episode is not None and self.settings.pairwise > 0:
            better = (episode[:, None] == episode[None, :]) & (target[:, None] > target[None, :] + 1e-6)
            if better.any():
                margin = logits[:, None] - logits[None, :]
                loss = loss + self.settings.pairwise * nn.functional.softplus(-margin[better]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()
        self.updates += 1
        if self.target is not None and self.updates % self.settings.target_sync == 0:
            self.target.load_state_dict(self.network.state_dict())
        return float(loss.detach())

    def update(self, steps: int | None = None) -> float | None:
        """A bounded number of gradient steps on replayed transitions; returns the mean loss."""
        with self.lock:
            if self.buffer.size == 0:
                return None
            losses = []
            for _ in range(steps if steps is not None else self.settings.steps_per_update):
                batch = self.buffer.sample(self.settings.batch_size, self.rng)
                losses.append(self.train_step(
                    _tensor(batch["task"], self.device), _tensor(batch["case_task"], self.device),
                    _tensor(batch["case_plan"], self.device), self._targets(batch),
                    _tensor(batch["weight"], self.device), _ids(batch["mismatch"], self.device),
                    torch.as_tensor(batch["episode"], device=self.device)))
            return float(np.mean(losses))

    def selection_weights(self, q: np.ndarray) -> np.ndarray:
        """Credit per shown case: its retrieval probability softmax(Q / alpha), scaled to mean 1.

        The memory-augmented policy mixes the cases by mu(c | s) = softmax(Q / alpha), so a case
        the policy leaned on more carries more of the outcome; uniform when Q is not known."""
        if len(q) == 0:
            return np.zeros(0, np.float32)
        z = np.asarray(q, np.float64) / self.settings.alpha
        mu = np.exp(z - z.max())
        return (len(q) * mu / mu.sum()).astype(np.float32)

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "encoder": self.encoder, "dim": self.dim,
            "settings": asdict(self.settings), "network": self.network.state_dict(),
            "target": self.target.state_dict() if self.target is not None else None,
            "optimizer": self.optimizer.state_dict(), "updates": self.updates, "episode_count": self.episode_count,
            "buffer": {"size": self.buffer.size, "cursor": self.buffer.cursor, "next_width": self.buffer.next_width,
                       "arrays": {k: torch.from_numpy(v[:self.buffer.size].copy()) for k, v in self.buffer.arrays.items()}},
            "last_episode": list(self.last_episode), "episodes": list(self.episodes), "rng": self.rng.bit_generator.state,
            "torch_rng": self._cpu_rng.clone(), "gate": list(self.gate),
        }

    def save(self, path: str | Path) -> None:
        """Write, then rename: a crash mid-save leaves the previous checkpoint intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            state = self.state()
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    torch.save(state, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    @classmethod
    def load(cls, path: str | Path, encoder: str, device: str = "cpu") -> "QRetriever":
        try:
            # weights_only: a checkpoint holds tensors and plain data, and loading runs no code.
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise RetrieverError(f"no retriever checkpoint at {path}: train one with `memento retriever train`") from None
        except Exception as exc:
            raise RetrieverError(f"retriever checkpoint {path} cannot be read ({type(exc).__name__}): "
                                 "delete it or train again") from exc
        return cls.from_state(state, encoder, device, str(path))

    def to_bytes(self) -> bytes:
        """The checkpoint as bytes (what `save` writes), for a store other than a file."""
        buffer = io.BytesIO()
        with self.lock:
            torch.save(self.state(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, encoder: str, device: str = "cpu", where: str = "a published version") -> "QRetriever":
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RetrieverError(f"retriever checkpoint in {where} cannot be read ({type(exc).__name__})") from exc
        return cls.from_state(state, encoder, device, where)

    @classmethod
    def from_state(cls, state: Any, encoder: str, device: str, path: str) -> "QRetriever":
        version = state.get("format_version") if isinstance(state, dict) else None
        if version not in (2, FORMAT_VERSION):
            raise RetrieverError(f"retriever checkpoint {path} has format {version!r}, this version reads "
                                 f"{FORMAT_VERSION} (and 2): use the memento version that wrote it, or train a new "
                                 "one with another retriever_path")
        if state["encoder"] != encoder:
            raise RetrieverError(f"retriever checkpoint {path} was trained on encoder {state['encoder']!r}, "
                                 f"not the configured {encoder!r}: set the encoder back or train again")
        upgrading = version == 2  # no lexical term, metric or episodes yet: they start empty
        settings = ({"embedding_mlp": True, "scaled_features": False, **state["settings"]} if upgrading
                    else state["settings"])
        known = {f.name for f in fields(RetrieverSettings)}  # a setting since retired (plan_pairs) is dropped
        retriever = cls(state["dim"], encoder, device, RetrieverSettings(**{k: v for k, v in settings.items() if k in known}))
        retriever.network.load_state_dict(state["network"], strict=not upgrading)
        if retriever.target is not None and state["target"] is not None:
            retriever.target.load_state_dict(state["target"], strict=not upgrading)
        if not upgrading:  # format 2 had one parameter group; its moments are not worth a mismatch
            retriever.optimizer.load_state_dict(state["optimizer"])
        retriever.updates = state["updates"]
        retriever.episode_count = state.get("episode_count", state["buffer"]["size"])
        saved = state["buffer"]
        for key, values in saved["arrays"].items():
            values = values.numpy()
            # Word ids saved narrower (the release's 64) fill the first columns; the rest stay padding.
            retriever.buffer.arrays[key][(slice(len(values)), *map(slice, values.shape[1:]))] = values
        retriever.buffer.size, retriever.buffer.cursor = saved["size"], saved["cursor"]
        if upgrading:  # each old transition its own run
            retriever.buffer.arrays["episode"][:saved["size"]] = np.arange(saved["size"])
        retriever.last_episode = state["last_episode"]
        retriever.episodes = state["episodes"]
        retriever.rng.bit_generator.state = state["rng"]
        retriever._cpu_rng = state["torch_rng"]
        gate = state.get("gate")
        retriever.gate = ([float(g) for g in gate] if isinstance(gate, (list, tuple)) and len(gate) == 2
                          # an earlier checkpoint, offline-trained or learned before the check existed:
                          # its ranking is used, as it was then
                          else [GATE_MARGIN, 0.0])
        return retriever

