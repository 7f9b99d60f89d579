"""The Q-retriever alone: learning, devices, checkpoints."""

import numpy as np
import pytest
import torch

from memento.memory.device import DeviceError, resolve_device
from memento.memory.q_retriever import QRetriever, RetrieverError
from memento.memory.training import PairFeatures, evaluate, offline_settings, train_offline

DIM = 32


def _unit(rng, n):
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_pairs(n_queries=400, per_query=12, seed=0):
    """Reward 1 exactly when the case's plan points the same way as the task along a hidden axis."""
    rng = np.random.default_rng(seed)
    tasks, case_tasks, plans = _unit(rng, n_queries), _unit(rng, n_queries * per_query), _unit(rng, n_queries * per_query)
    task = np.repeat(tasks, per_query, axis=0)
    label = ((task[:, 0] * plans[:, 0]) > 0).astype(np.float32)
    queries = [f"q{i}" for i in range(n_queries) for _ in range(per_query)]
    return PairFeatures(queries, task, case_tasks, plans, label)


def test_learns_a_separable_synthetic_signal():
    retriever = QRetriever(DIM, "enc", "cpu", offline_settings())
    train = synthetic_pairs(seed=0)
    report = train_offline(retriever, train, epochs=60, patience=10, progress=False)
    held_out = evaluate(retriever, synthetic_pairs(seed=1))
    assert report.val_roc_auc > 0.85
    assert held_out["roc_auc"] > 0.85 and held_out["n"] == 400 * 12


def test_untrained_network_is_at_chance_on_the_same_signal():
    assert abs(evaluate(QRetriever(DIM, "enc", "cpu", offline_settings()), synthetic_pairs(seed=1))["roc_auc"] - 0.5) < 0.1


def test_online_updates_flip_the_ranking_for_a_related_task():
    rng = np.random.default_rng(3)
    retriever = QRetriever(DIM, "enc", "cpu")
    task, related = _unit(rng, 1)[0], None
    related = task + 0.1 * _unit(rng, 1)[0]
    related /= np.linalg.norm(related)
    cases, plans = _unit(rng, 2), _unit(rng, 2)
    before = retriever.q_values(related, cases, plans)
    good, bad = int(np.argmin(before)), int(np.argmax(before))  # reward the case ranked lower
    for _ in range(12):
        retriever.observe(task, cases[[good]], plans[[good]], 1.0)
        retriever.observe(task, cases[[bad]], plans[[bad]], 0.0)
        retriever.update(8)
    after = retriever.q_values(related, cases, plans)
    assert after[good] > after[bad]
    assert retriever.updates == 96 and retriever.buffer.size == 24


def test_credit_follows_retrieval_probability():
    weights = QRetriever(DIM, "enc", "cpu").selection_weights(np.array([0.9, 0.5, 0.1]))
    assert weights.mean() == pytest.approx(1.0) and weights[0] > weights[1] > weights[2]


def test_a_replayed_episode_is_not_learned_twice():
    rng = np.random.default_rng(0)
    retriever = QRetriever(DIM, "enc", "cpu")
    args = (_unit(rng, 1)[0], _unit(rng, 3), _unit(rng, 3), 1.0)
    assert retriever.observe(*args, episode="case-1") == 3
    assert retriever.observe(*args, episode="case-1") == 0
    assert retriever.buffer.size == 3


def test_discount_above_zero_uses_a_target_network_and_next_states():
    from memento.memory.q_retriever import RetrieverSettings

    rng = np.random.default_rng(0)
    retriever = QRetriever(DIM, "enc", "cpu", RetrieverSettings(discount=0.5, target_sync=4))
    assert retriever.target is not None
    for _ in range(6):
        retriever.observe(_unit(rng, 1)[0], _unit(rng, 3), _unit(rng, 3), 1.0)
    assert retriever.buffer.arrays["has_next"][:15].all() and not retriever.buffer.arrays["has_next"][15:18].any()
    batch = retriever.buffer.sample(18, np.random.default_rng(0))
    targets = retriever._targets(batch).numpy()
    linked = batch["has_next"]
    assert np.all((targets[linked] > 0.5) & (targets[linked] < 1.0))  # (1 - g) * 1 + g * V, with 0 < V < 1
    assert np.all(targets[~linked] == 1.0)
    retriever.update(8)
    for a, b in zip(retriever.network.state_dict().values(), retriever.target.state_dict().values()):
        assert torch.equal(a, b)  # synced at step 8 (target_sync=4)


def test_device_selection_and_fallback():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                           "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="cuda:99"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
    assert QRetriever(DIM, "enc", "auto").device == resolve_device("auto")


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    retriever = QRetriever(DIM, "enc", "cpu")
    for n in range(5):
        retriever.observe(_unit(rng, 1)[0], _unit(rng, 4), _unit(rng, 4), float(n % 2), episode=f"e{n}")
    retriever.update(10)
    path = tmp_path / "retriever.pt"
    retriever.save(path)
    loaded = QRetriever.load(path, "enc", "cpu")
    probe = (_unit(rng, 1)[0], _unit(rng, 6), _unit(rng, 6))
    np.testing.assert_allclose(loaded.q_values(*probe), retriever.q_values(*probe), rtol=1e-6)
    assert loaded.updates == 10 and loaded.buffer.size == 20 and loaded.episodes == [f"e{n}" for n in range(5)]
    np.testing.assert_array_equal(loaded.buffer.arrays["task"][:20], retriever.buffer.arrays["task"][:20])
    assert loaded.optimizer.state_dict()["state"].keys() == retriever.optimizer.state_dict()["state"].keys()
    # Both continue identically: same optimiser moments, same replay sampling state (and, with
    # the global seed set alike, the same dropout masks).
    for model in (retriever, loaded):
        torch.manual_seed(7)
        model.update(3)
    np.testing.assert_allclose(loaded.q_values(*probe), retriever.q_values(*probe), rtol=1e-5)


def test_a_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "retriever.pt"
    retriever = QRetriever(DIM, "enc", "cpu")
    retriever.save(path)
    good = path.read_bytes()

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        retriever.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["retriever.pt"]


def test_a_checkpoint_from_another_encoder_is_refused(tmp_path):
    path = tmp_path / "retriever.pt"
    QRetriever(DIM, "all-MiniLM-L6-v2", "cpu").save(path)
    with pytest.raises(RetrieverError, match="trained on encoder 'all-MiniLM-L6-v2', not the configured 'other'"):
        QRetriever.load(path, "other", "cpu")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RetrieverError, match="cannot be read"):
        QRetriever.load(path, "all-MiniLM-L6-v2", "cpu")


def test_choosing_cases_greedy_or_by_the_softmax_policy():
    retriever = QRetriever(4, "enc")
    q = np.array([0.2, 0.9, 0.5, 0.6])
    assert list(retriever.choose(q, 4, 0.0)) == [1, 3, 2, 0]  # temperature 0: highest Q first
    assert list(retriever.choose(q, 2, 0.3, "task")) == list(retriever.choose(q, 2, 0.3, "task"))  # seeded
    close = np.array([0.2, 0.65, 0.5, 0.6])  # near-ties are where the policy explores
    firsts = [retriever.choose(close, 1, 0.3, f"task {n}")[0] for n in range(400)]
    counts = np.bincount(firsts, minlength=4)
    assert counts[1] == counts.max() and counts[1] < 400  # the best case leads most often, not always
    assert counts[3] > counts[2] > counts[0]  # and a better case more often than a worse one


def lookalike_cluster(rng, n, side, dim=DIM, gap=0.08, nuisance=0.6, noise=0.1, along=None):
    """Unit vectors near one shared direction, on one side (+1 or -1) of a second one, and
    anywhere along a third (a nuisance, like the month a task names, that moves cosine more),
    or at `along` on it."""
    x = np.zeros((n, dim), np.float32)
    x[:, 0] = 1.0
    x[:, 1] = side * gap
    x[:, 2] = nuisance * (rng.uniform(-1, 1, size=n) if along is None else along)
    x[:, 3:] = noise * rng.normal(size=(n, dim - 3)) / np.sqrt(dim - 3)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def auc(scores, labels):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(labels, scores)


def test_a_few_dozen_labels_teach_it_a_look_alike_problem_where_cosine_misleads():
    """Two clusters of tasks differ along one direction; a case helps a task of its own cluster
    only. After 48 labelled transitions (12 runs of 4 cases, learned online), new tasks are shown
    the other cluster's cases at their own place on the nuisance (the same month, in words), their
    own cluster's elsewhere: cosine ranks the wrong cluster first, the learner the right one."""
    rng = np.random.default_rng(7)
    retriever = QRetriever(DIM, "enc", "cpu")
    for run in range(12):
        side = 1 if run % 2 else -1
        task = lookalike_cluster(rng, 1, side)[0]
        sides = np.array([1, -1, 1, -1])
        cases = np.concatenate([lookalike_cluster(rng, 1, s) for s in sides])
        retriever.observe(task, cases, cases, (sides == side).astype(np.float32), episode=f"run-{run}")
        retriever.update(8)
    first_right, cosine_first = 0, 0
    for n in range(40):
        side, at = (1 if n % 2 else -1), rng.uniform(-1, 1)
        task = lookalike_cluster(rng, 1, side, along=at)[0]
        sides = np.array([1, -1] * 4)
        # the other cluster at the task's place on the nuisance; its own 0.6 or more away (wrapped)
        places = [(at + 1 + rng.uniform(0.6, 1.4)) % 2 - 1 if s == side else at for s in sides]
        cases = np.concatenate([lookalike_cluster(rng, 1, s, along=a) for s, a in zip(sides, places)])
        first_right += sides[int(np.argmax(retriever.q_values(task, cases, cases)))] == side
        cosine_first += sides[int(np.argmax(cases @ task))] == side
    assert cosine_first <= 12  # similarity is misled
    assert first_right >= 36  # of 40 new tasks


def test_a_few_dozen_labels_teach_it_which_differing_words_matter():
    """The same problem in words: tasks differ in a cue word (which matters) and a month (which
    does not), and their embeddings carry neither. After 48 labelled transitions the hashed-word
    term ranks same-cue cases first for tasks in months never seen."""
    rng = np.random.default_rng(8)
    retriever = QRetriever(DIM, "enc", "cpu")
    cues, seen, unseen = ["retail", "wholesale", "online"], ["March", "April", "May"], ["June", "July", "August"]

    def text(cue, month):
        return f"What is the total cost in the attached {cue} purchase log for {month}?"

    def random_vectors(n):
        return _unit(rng, n)

    from memento.memory.lexical import mismatch_matrix

    for run in range(12):
        cue = cues[run % 3]
        task = text(cue, seen[run % 3])
        shown = [(cues[(run + i) % 3], seen[(run + i + 1) % 3]) for i in range(4)]
        rewards = np.array([float(c == cue) for c, _ in shown], np.float32)
        vectors = random_vectors(4)
        retriever.observe(random_vectors(1)[0], vectors, vectors, rewards, episode=f"run-{run}",
                          mismatch=mismatch_matrix(task, [text(c, m) for c, m in shown]))
        retriever.update(8)
    first_right = 0
    for n in range(30):
        cue, month = cues[n % 3], unseen[n % 3]
        shown = [(c, m) for c in cues for m in unseen]
        vectors = random_vectors(len(shown))
        q = retriever.q_values(random_vectors(1)[0], vectors, vectors,
                               mismatch_matrix(text(cue, month), [text(c, m) for c, m in shown]))
        first_right += shown[int(np.argmax(q))][0] == cue
    assert first_right >= 27  # of 30; at chance a third


def test_a_format_2_checkpoint_of_the_previous_release_loads(tmp_path):
    """The previous release's module (kept as a fixture) writes a checkpoint; this one reads it:
    the same Q for pairs without words (its MLP kept), its buffer, each old transition a run."""
    import importlib.util
    import sys
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "fixtures" / "q_retriever_v2.py"
    spec = importlib.util.spec_from_file_location("q_retriever_v2", source)
    old_module = importlib.util.module_from_spec(spec)
    sys.modules["q_retriever_v2"] = old_module  # dataclasses look their module up
    try:
        spec.loader.exec_module(old_module)
    finally:
        sys.modules.pop("q_retriever_v2", None)
    rng = np.random.default_rng(0)
    old = old_module.QRetriever(DIM, "enc", "cpu")
    for n in range(4):
        old.observe(_unit(rng, 1)[0], _unit(rng, 3), _unit(rng, 3), float(n % 2), episode=f"e{n}")
    old.update(6)
    old.save(tmp_path / "v2.pt")
    loaded = QRetriever.load(tmp_path / "v2.pt", "enc", "cpu")
    probe = (_unit(rng, 1)[0], _unit(rng, 5), _unit(rng, 5))
    np.testing.assert_allclose(loaded.q_values(*probe), old.q_values(*probe), rtol=1e-3)  # the new metric: ~1e-4
    assert loaded.settings.embedding_mlp and loaded.updates == 6 and loaded.buffer.size == 12
    assert list(loaded.buffer.arrays["episode"][:12]) == list(range(12)) and loaded.episodes == ["e0", "e1", "e2", "e3"]
    loaded.observe(_unit(rng, 1)[0], _unit(rng, 2), _unit(rng, 2), 1.0, episode="e4")
    assert loaded.update(2) is not None  # and it goes on learning
