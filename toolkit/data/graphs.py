"""Node-classification data: one graph, its node features and labels, and semi-supervised splits.

Sources (`--data`):
- `drosophila` (default): the left hemisphere of the Drosophila larva mushroom-body connectome
  (Eichler et al. 2017) from `graspologic`'s package data: 209 neurons, synapse-count adjacency,
  4 cell types (K, I, O, P). Install graspologic without its dependencies; we read its CSV files.
- `karate`: Zachary's karate club from networkx (34 members, the 2 clubs after the split).
- `edges:EDGES.csv,labels:LABELS.csv[,features:FEATURES.csv]`: an edge list (`source,target[,weight]`),
  node labels (`node,label`) and optionally node features (`node,f1,f2,...`); each file starts
  with a header row.

Graphs without node features get structural ones (`structural_features`): log degree, random-walk
return probabilities (RWSE) and an adjacency spectral embedding (graspologic's ASE). Edges are
symmetrised (a synapse either way links two neurons). Splits: `labels_per_class` labelled nodes
per class for training (fixed seed); the rest are split evenly into validation and test.
"""

import csv
import dataclasses
import importlib.util
import os

import numpy as np

from toolkit.errors import ToolkitError

DROSOPHILA_HOW_TO_GET = "pip install --no-deps graspologic (its package data holds the connectome CSV files)"


@dataclasses.dataclass
class GraphData:
    adjacency: np.ndarray  # (N, N) float32, symmetric, no self loops
    features: np.ndarray  # (N, F) float32
    labels: np.ndarray  # (N,) int64 in [0, classes)
    class_names: list
    source: str
    node_names: list

    @property
    def num_nodes(self):
        return len(self.labels)

    def split(self, labels_per_class, seed=0):
        return semi_supervised_split(self.labels, labels_per_class, seed)

    def inputs(self):
        """The model's inputs for this one graph (a batch of 1)."""
        return {"features": self.features[None], "adjacency": self.adjacency[None]}


def load(source="drosophila"):
    if source == "drosophila" or source.startswith("drosophila:"):
        return drosophila(source.partition(":")[2] or None)
    if source == "karate":
        return karate()
    if source.startswith("edges:"):
        parts = dict(p.partition(":")[::2] for p in source.split(","))
        if "labels" not in parts:
            raise ToolkitError(f"{source!r}: give labels too, e.g. edges:EDGES.csv,labels:LABELS.csv")
        return from_files(parts["edges"], parts["labels"], parts.get("features"))
    raise ToolkitError(
        f"unknown graph data source {source!r}; use drosophila, karate or edges:EDGES.csv,labels:LABELS.csv"
    )


def graspologic_folder():
    spec = importlib.util.find_spec("graspologic")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError(f"the Drosophila connectome is not installed: {DROSOPHILA_HOW_TO_GET}")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "drosophila")


def drosophila(folder=None):
    folder = folder or graspologic_folder()
    adjacency_path = os.path.join(folder, "left_adjacency.csv")
    labels_path = os.path.join(folder, "left_cell_labels.csv")
    for path in (adjacency_path, labels_path):
        if not os.path.isfile(path):
            raise ToolkitError(f"{path} not found: {DROSOPHILA_HOW_TO_GET}")
    try:
        adjacency = np.loadtxt(adjacency_path, dtype=np.float64)
    except ValueError as e:
        raise ToolkitError(f"{adjacency_path}: not a whitespace-separated numeric matrix ({e})") from None
    with open(labels_path) as f:
        names = [line.strip() for line in f if line.strip()]
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1] or len(names) != len(adjacency):
        raise ToolkitError(f"{adjacency_path} is {adjacency.shape} but {labels_path} has {len(names)} labels")
    classes = sorted(set(names))
    labels = np.asarray([classes.index(n) for n in names], np.int64)
    # Synapse counts span 1..~60: log-scale them, and symmetrise (connection either way).
    adjacency = np.log1p(adjacency + adjacency.T)
    nodes = [f"neuron {i}" for i in range(len(names))]
    return _graph(adjacency, None, labels, classes, "drosophila (graspologic, left hemisphere)", nodes)


def karate():
    import networkx as nx

    graph = nx.karate_club_graph()
    nodes = list(graph.nodes)
    classes = sorted({graph.nodes[n]["club"] for n in nodes})
    labels = np.asarray([classes.index(graph.nodes[n]["club"]) for n in nodes], np.int64)
    adjacency = nx.to_numpy_array(graph, nodelist=nodes, weight=None)
    return _graph(adjacency, None, labels, classes, "karate club (networkx)", [str(n) for n in nodes])


def from_files(edges_path, labels_path, features_path=None):
    """An edge list, node labels and optional node features; every bad row is named."""
    labels_rows = _read_csv(labels_path, 2)
    nodes = [row[0] for _, row in labels_rows]
    if len(set(nodes)) != len(nodes):
        raise ToolkitError(f"{labels_path}: a node is listed twice")
    index = {n: i for i, n in enumerate(nodes)}
    classes = sorted({row[1] for _, row in labels_rows})
    if len(classes) < 2:
        raise ToolkitError(f"{labels_path}: need at least 2 classes, found {classes}")
    labels = np.asarray([classes.index(row[1]) for _, row in labels_rows], np.int64)
    adjacency = np.zeros((len(nodes), len(nodes)))
    for line, row in _read_csv(edges_path, 2):
        for node in row[:2]:
            if node not in index:
                raise ToolkitError(f"{edges_path} line {line}: node {node!r} is not in {labels_path}")
        weight = _number(row[2], edges_path, line) if len(row) > 2 else 1.0
        if not weight >= 0:
            raise ToolkitError(f"{edges_path} line {line}: weight {row[2]!r} must be >= 0")
        i, j = index[row[0]], index[row[1]]
        adjacency[i, j] = adjacency[j, i] = adjacency[i, j] + weight
    features = None
    if features_path:
        rows = _read_csv(features_path, 2)
        width = len(rows[0][1]) - 1
        features = np.full((len(nodes), width), np.nan)
        for line, row in rows:
            if row[0] not in index:
                raise ToolkitError(f"{features_path} line {line}: node {row[0]!r} is not in {labels_path}")
            if len(row) - 1 != width:
                raise ToolkitError(f"{features_path} line {line}: {len(row) - 1} features, expected {width}")
            features[index[row[0]]] = [_number(v, features_path, line) for v in row[1:]]
        missing = np.flatnonzero(np.isnan(features).any(axis=1))
        if missing.size:
            raise ToolkitError(f"{features_path}: no features for node {nodes[missing[0]]!r}")
    return _graph(adjacency, features, labels, classes, f"edges:{edges_path}", nodes)


def _graph(adjacency, features, labels, classes, source, nodes):
    np.fill_diagonal(adjacency, 0)
    if features is None:
        features = structural_features(adjacency)
    else:  # standardise user features per column
        features = (features - features.mean(0)) / np.maximum(features.std(0), 1e-6)
    return GraphData(adjacency.astype(np.float32), features.astype(np.float32), labels, classes, source, nodes)


def structural_features(adjacency, walk_steps=8, embedding_dim=8):
    """Features from structure alone, standardised per column: log(1 + degree), random-walk return
    probabilities after 2..walk_steps+1 steps (RWSE: tells hubs, chains and cliques apart) and
    the adjacency spectral embedding (top singular vectors scaled by sqrt of their values)."""
    degree = adjacency.sum(1)
    walk = adjacency / np.maximum(degree, 1e-12)[:, None]
    returns, power = [], walk
    for _ in range(walk_steps):
        power = power @ walk
        returns.append(np.diag(power))
    u, s, _ = np.linalg.svd(adjacency)
    k = min(embedding_dim, len(s))
    spectral = u[:, :k] * np.sqrt(s[:k])
    spectral *= np.sign(spectral[np.argmax(np.abs(spectral), axis=0), np.arange(k)])  # fix each vector's sign
    features = np.column_stack([np.log1p(degree), np.log1p((adjacency > 0).sum(1)), *returns, spectral])
    return (features - features.mean(0)) / np.maximum(features.std(0), 1e-6)


def semi_supervised_split(labels, labels_per_class, seed=0):
    """{"train": labels_per_class nodes of each class, "validation"/"test": the rest, halved}."""
    rng = np.random.default_rng(seed)
    train = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= labels_per_class:
            raise ToolkitError(
                f"class {c} has {len(members)} nodes: too few for {labels_per_class} labelled ones and a test part"
            )
        train.extend(rng.choice(members, labels_per_class, replace=False))
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), train))
    half = len(rest) // 2
    return {"train": np.sort(train), "validation": np.sort(rest[:half]), "test": np.sort(rest[half:])}


def _read_csv(path, min_columns):
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f), start=1) if row]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ToolkitError(f"{path}: cannot read as a UTF-8 CSV ({e})") from None
    rows = rows[1:]  # the header row
    if not rows:
        raise ToolkitError(f"{path}: no rows after the header")
    for line, row in rows:
        if len(row) < min_columns:
            raise ToolkitError(f"{path} line {line}: expected at least {min_columns} columns, got {len(row)}")
    return rows


def _number(text, path, line):
    try:
        value = float(text)
    except ValueError:
        raise ToolkitError(f"{path} line {line}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise ToolkitError(f"{path} line {line}: {text!r} is not a finite number")
    return value
